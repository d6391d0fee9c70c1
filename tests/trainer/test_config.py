"""Job settings checks that need no model: ranges, and target regexes that could hang the matcher."""

import pytest

from trainer.config import LoraSettings, TrainConfig, check_target_regex
from trainer.errors import ConfigError
from work_counter import counting_work


@pytest.mark.parametrize("pattern", ["(a*)*", "(?:.*.*)*=", "(a+)+b", "(a|b*)*", "(x{2,}){3}"])
def test_a_target_regex_with_nested_repetition_is_refused_at_once(pattern):
    with counting_work() as work, pytest.raises(ConfigError) as raised:
        LoraSettings(targets="re:" + pattern).check()
    assert "repeats a group that itself repeats" in str(raised.value) and raised.value.field == "targets"
    # Refused by reading the parsed pattern, never by running it, in a few hundred calls (parsing a short
    # pattern) where a backtracking match would make millions. Work is counted, not timed.
    assert not work.ran(pattern) and work.calls < 2_000, (work.calls, work.regex_runs)


def test_the_work_counter_sees_a_regex_run_and_its_calls():
    import re

    with counting_work() as work:
        re.compile("(a*)*b").match("a" * 20)
    assert work.ran("(a*)*b") and work.calls >= 1


@pytest.mark.parametrize("pattern", [r".*q_proj", r"layers\.\d+\.(q|v)_proj", "(?:ab)*c", r"model\..*\.(dense|query)"])
def test_ordinary_target_regexes_pass(pattern):
    check_target_regex(pattern)


def test_a_regex_that_does_not_compile_names_the_field():
    with pytest.raises(ConfigError, match="is not a valid regular expression") as raised:
        LoraSettings(targets="re:[").check()
    assert raised.value.field == "targets"


@pytest.mark.parametrize("changes, field", [({"lr": float("nan")}, "lr"), ({"max_length": 10**9}, "max_length"),
                                            ({"batch_size": 0}, "batch_size"), ({"seed": -1}, "seed"),
                                            ({"quantize": "nf8"}, "quantize"), ({"dtype": "float64"}, "dtype")])
def test_out_of_range_settings_name_their_field(changes, field):
    config = TrainConfig(model="m", data="d", out="o", **changes)
    with pytest.raises(ConfigError) as raised:
        config.check()
    assert raised.value.field == field
