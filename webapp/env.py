"""Typed readers for the environment variables that configure Loraworks.

Each reader returns a safe local default when the variable is unset and raises ImproperlyConfigured, naming the
variable and the value it got, when the value cannot be used. README.md has the table of every variable.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}
RATE_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOCAL_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
PREPARE_THRESHOLD = 5  # runs of a query on one connection before PostgreSQL keeps it prepared (psycopg's default)


class Rate(NamedTuple):
    """At most `count` calls per `period_s` seconds."""
    count: int
    period_s: int


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    return default if raw is None else yes_no(raw, name)


def yes_no(raw: str, name: str) -> bool:
    """`raw` read as a yes/no word; ImproperlyConfigured naming `name` when it is none."""
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a yes/no value: use one of 1, true, yes, on, 0, false, no, off")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f"from {minimum if minimum is not None else '-∞'} to {maximum if maximum is not None else '∞'}"
        raise ImproperlyConfigured(f"{name}={value} is out of range: it must be {bounds}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """One of `choices`, matched regardless of case and returned as spelt in `choices`."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    by_word = {choice.lower(): choice for choice in choices}
    try:
        return by_word[raw.strip().lower()]
    except KeyError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not one of: {', '.join(choices)}") from None


def env_rate(name: str, default: str) -> Rate | None:
    """A rate limit "N/second|minute|hour|day" ("30/hour" -> Rate(30, 3600); a bare "N" is per minute);
    "0" or "" -> None, no limit."""
    raw = os.environ.get(name, default)
    text = raw.strip()
    if text in ("", "0"):
        return None
    count, _, period = text.partition("/")
    seconds = RATE_PERIODS.get(period.strip().lower().removesuffix("s") or "minute")
    try:
        allowed = int(count)
    except ValueError:
        allowed = 0
    if seconds is None or allowed < 1:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a rate limit: write N/period with N at least 1, e.g. "
                                   f"30/hour (periods: {', '.join(RATE_PERIODS)}), or 0 for no limit")
    return Rate(allowed, seconds)


def allowed_hosts(production: bool) -> list[str]:
    """ALLOWED_HOSTS: loopback names by default locally; required in production, where no default is safe."""
    hosts = env_list("ALLOWED_HOSTS", [] if production else LOCAL_HOSTS)
    if production and not hosts:
        raise ImproperlyConfigured("ALLOWED_HOSTS is required when PRODUCTION is on: set it to the comma-separated "
                                   "host names the site is served at, e.g. loraworks.example")
    return hosts


def env_url(name: str, default: str, schemes: tuple[str, ...]) -> str:
    raw = os.environ.get(name, default)
    scheme = urlsplit(raw).scheme
    if scheme not in schemes:
        raise ImproperlyConfigured(f"{name}={raw!r} must be a URL starting with one of: "
                                   + ", ".join(f"{s}://" for s in schemes))
    return raw


def database_from_url(url: str, base_dir: Path) -> dict:
    """Turn DATABASE_URL into a Django DATABASES entry.

    sqlite:///relative/path, sqlite:////absolute/path, postgres://user:password@host:port/name?sslmode=require
    """
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise ImproperlyConfigured(f"DATABASE_URL={url!r} names no SQLite file (example: sqlite:///var/db.sqlite3)")
        file = Path(path) if Path(path).is_absolute() else base_dir / path
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(file),
                "OPTIONS": {"timeout": 20}}
    if parts.scheme in ("postgres", "postgresql"):
        name = parts.path.lstrip("/")
        if not name:
            raise ImproperlyConfigured(f"DATABASE_URL={url!r} names no database (example: postgres://user@host/db)")
        try:
            port = parts.port
        except ValueError:
            raise ImproperlyConfigured(f"DATABASE_URL={url!r} has a port that is not a number") from None
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(name),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(port or ""),
            "OPTIONS": postgres_options(url, dict(parse_qsl(parts.query))),
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }
    raise ImproperlyConfigured(f"DATABASE_URL={url!r} has an unsupported scheme {parts.scheme!r}: "
                               "use sqlite:/// or postgres://")


def postgres_options(url: str, options: dict) -> dict:
    """The connection OPTIONS of a postgres:// DATABASE_URL, from its query string.

    Parameters are bound on the server, and a query run PREPARE_THRESHOLD times on a connection becomes a prepared
    statement: PostgreSQL then skips parsing and planning the pages' repeated queries (about half its CPU per page
    in benchmarks/web_load.py). A pooler in transaction mode (PgBouncer) cannot keep either across transactions:
    `?server_side_binding=false&prepare_threshold=none` turns both off.
    """
    binding = yes_no(options.get("server_side_binding", "true"), f"DATABASE_URL={url!r}: server_side_binding")
    threshold = options.get("prepare_threshold", str(PREPARE_THRESHOLD)).lower()
    if threshold != "none" and not (threshold.isdigit() and threshold.isascii()):
        raise ImproperlyConfigured(f"DATABASE_URL={url!r}: prepare_threshold={threshold!r} is not a count of runs "
                                   "or none")
    return {**options, "server_side_binding": binding,
            "prepare_threshold": None if threshold == "none" else int(threshold)}


def secret_key(production: bool, key_file: Path) -> str:
    """SECRET_KEY from the environment; locally, one generated on first run and kept in `key_file`."""
    key = os.environ.get("SECRET_KEY", "")
    if key:
        if production and len(key) < 32:
            raise ImproperlyConfigured("SECRET_KEY must be at least 32 characters in production")
        return key
    if production:
        raise ImproperlyConfigured("SECRET_KEY is required when PRODUCTION is on (set it to a long random string)")
    if key_file.exists():
        return key_file.read_text().strip()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    # Created with 0600 so the key is not readable by other users of the machine.
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key
