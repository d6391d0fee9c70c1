"""The reporter protocol: how `train` tells its caller about progress, and how the caller asks it to stop.

The engine never decides where progress goes. The CLI passes a console reporter; the Celery worker passes
one that publishes to Redis and the database.
"""
from __future__ import annotations

import sys
from typing import Protocol


class Reporter(Protocol):
    # `metrics`: the step's other figures, passed only by methods that have some (DPO: reward margin, reward
    # accuracy, chosen/rejected log-probabilities).
    def on_step(self, step: int, total_steps: int, loss: float, lr: float, tokens_per_s: float,
                eta_s: float, metrics: dict | None = None) -> None: ...

    def on_eval(self, metrics: dict) -> None: ...

    def on_log(self, message: str) -> None: ...

    def should_stop(self) -> bool: ...


class NullReporter:
    """Ignores everything and never asks to stop."""

    def on_step(self, step, total_steps, loss, lr, tokens_per_s, eta_s, metrics=None):
        pass

    def on_eval(self, metrics):
        pass

    def on_log(self, message):
        pass

    def should_stop(self):
        return False


class ConsoleReporter(NullReporter):
    """Draws a one-line progress bar on a terminal, and plain log lines otherwise."""

    def __init__(self, stream=None, width: int = 30):
        self.stream = stream or sys.stderr
        self.width = width
        self.is_tty = self.stream.isatty()

    def on_step(self, step, total_steps, loss, lr, tokens_per_s, eta_s, metrics=None):
        if not self.is_tty:
            return
        done = int(self.width * step / max(total_steps, 1))
        bar = "#" * done + "-" * (self.width - done)
        self.stream.write(f"\r[{bar}] {step}/{total_steps} loss {loss:.4f} lr {lr:.2e} "
                          f"{tokens_per_s:,.0f} tok/s eta {eta_s:,.0f}s")
        if step >= total_steps:
            self.stream.write("\n")
        self.stream.flush()

    def on_eval(self, metrics):
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        self.on_log(f"eval: {shown}")

    def on_log(self, message):
        if self.is_tty:
            self.stream.write("\r")
        self.stream.write(message + "\n")
        self.stream.flush()
