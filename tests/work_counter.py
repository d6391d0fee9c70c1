"""Counting the work a piece of code does instead of timing it, so that a busy 2-core machine cannot fail a test
and a slow path cannot hide behind a fast one: the calls made (Python and C), the regex matches among them, and
the pauses and network connections attempted."""
import re
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

MATCHING = {"match", "search", "fullmatch", "finditer", "findall", "sub", "subn", "split"}


@dataclass
class Work:
    calls: int = 0
    regex_runs: list[str] = field(default_factory=list)  # the patterns that a match, search, ... ran

    def ran(self, pattern: str) -> bool:
        return pattern in self.regex_runs


@contextmanager
def counting_work():
    """with counting_work() as work: ... -> work.calls, work.regex_runs (this thread only)."""
    work = Work()

    def profile(frame, event, arg):
        if event in ("call", "c_call"):
            work.calls += 1
            if event == "c_call" and arg.__name__ in MATCHING and isinstance(getattr(arg, "__self__", None),
                                                                              re.Pattern):
                work.regex_runs.append(arg.__self__.pattern)

    sys.setprofile(profile)
    try:
        yield work
    finally:
        sys.setprofile(None)


@contextmanager
def no_waiting_and_no_network(monkeypatch):
    """Within the block, time.sleep and socket connections are recorded and refused: yields the list of
    attempts (("sleep", seconds) or ("connect", address))."""
    attempts = []

    def sleep(seconds):
        attempts.append(("sleep", seconds))

    def connect(sock, address):
        attempts.append(("connect", address))
        raise OSError("network refused by the test")

    with monkeypatch.context() as patch:
        patch.setattr(time, "sleep", sleep)
        patch.setattr(socket.socket, "connect", connect)
        yield attempts
