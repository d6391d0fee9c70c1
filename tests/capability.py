"""What a test does when this machine lacks something it needs (a browser, root to mount a tmpfs, a database
server, a redis-server of its own): with CI set it fails, because CI is set up to have it and its absence is a
broken setup that a skip would hide; elsewhere it skips, printing the reason so it shows in the log."""
import os
import sys

import pytest

CAP_SYS_ADMIN = 21  # the capability bit that mount(2) checks


def missing(reason: str) -> None:
    """Fail in CI, skip (printing why) elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"must run in CI: {reason}")
    print(f"\nskipped: {reason}", file=sys.stderr)
    pytest.skip(reason)


def has_cap_sys_admin() -> bool:
    """Whether this process may mount file systems (the effective capability set in /proc/self/status)."""
    try:
        status = open("/proc/self/status").read()
    except OSError:
        return False
    effective = next((line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")), "0")
    return bool(int(effective, 16) >> CAP_SYS_ADMIN & 1)
