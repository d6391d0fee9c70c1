"""The console reporter: a redrawn progress bar on a terminal, plain log lines elsewhere."""
import io

from trainer.reporter import ConsoleReporter


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_on_a_terminal_each_step_redraws_one_progress_line_and_the_last_ends_it():
    stream = _Terminal()
    reporter = ConsoleReporter(stream, width=10)
    reporter.on_step(1, 4, 2.5, 1e-4, 1234.4, 90.2)
    assert stream.getvalue() == "\r[##--------] 1/4 loss 2.5000 lr 1.00e-04 1,234 tok/s eta 90s"
    reporter.on_step(4, 4, 1.25, 0.0, 2000.0, 0.0)
    assert stream.getvalue().endswith("\r[##########] 4/4 loss 1.2500 lr 0.00e+00 2,000 tok/s eta 0s\n")


def test_on_a_terminal_a_log_line_starts_at_the_line_start_over_the_bar():
    stream = _Terminal()
    reporter = ConsoleReporter(stream, width=4)
    reporter.on_step(1, 2, 1.0, 1e-3, 10.0, 5.0)
    reporter.on_log("saving")
    reporter.on_eval({"stage": "final", "eval_loss": 0.5, "perplexity": 1.6487})
    assert stream.getvalue().split("\r")[1:] == ["[##--] 1/2 loss 1.0000 lr 1.00e-03 10 tok/s eta 5s", "saving\n",
                                                 "eval: eval_loss 0.5000, perplexity 1.6487\n"]


def test_off_a_terminal_steps_print_nothing_and_logs_are_plain_lines():
    stream = io.StringIO()
    reporter = ConsoleReporter(stream)
    reporter.on_step(1, 2, 1.0, 1e-3, 10.0, 5.0)
    reporter.on_log("data: 0 rows skipped")
    assert stream.getvalue() == "data: 0 rows skipped\n"
    assert reporter.should_stop() is False
