"""`python -m workers.healthcheck NAME`: exit 0 when worker NAME answers and reaches the database and Redis.

Prints the worker's answer as JSON; exits 1 (with the reason on stderr) when it does not answer within the
timeout or cannot reach one of them. Compose runs it as each worker's healthcheck.
"""
import argparse
import json
import sys


def check(name: str, timeout_s: float) -> tuple[bool, str]:
    from workers.celery_app import app

    replies = app.control.broadcast("health_check", destination=[name], reply=True, timeout=timeout_s)
    answer = next((reply[name] for reply in replies if name in reply), None)
    if answer is None:
        return False, f"worker {name} did not answer within {timeout_s:g} s"
    unreachable = [part for part in ("database", "redis") if not answer.get(part)]
    if unreachable:
        return False, f"worker {name} cannot reach: {', '.join(unreachable)}"
    return True, json.dumps(answer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.healthcheck", description=__doc__.split("\n")[0])
    parser.add_argument("name", help="the worker's node name, as given to -n (e.g. train@host)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for its answer")
    args = parser.parse_args(argv)
    healthy, message = check(args.name, args.timeout)
    print(message, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
