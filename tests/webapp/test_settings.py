"""Settings are read from the environment; bad values stop start-up with a clear ImproperlyConfigured."""
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from webapp import env

ROOT = Path(__file__).resolve().parents[2]


def test_env_bool_reads_yes_and_no_words(monkeypatch):
    monkeypatch.setenv("FLAG", "Yes")
    assert env.env_bool("FLAG", False) is True
    monkeypatch.setenv("FLAG", "off")
    assert env.env_bool("FLAG", True) is False


def test_env_bool_rejects_a_word_that_is_not_yes_or_no(monkeypatch):
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match=r"DEBUG='maybe' is not a yes/no value"):
        env.env_bool("DEBUG", False)


def test_env_int_rejects_text_and_out_of_range_values(monkeypatch):
    monkeypatch.setenv("MAX_UPLOAD_MB", "lots")
    with pytest.raises(ImproperlyConfigured, match="MAX_UPLOAD_MB='lots' is not a whole number"):
        env.env_int("MAX_UPLOAD_MB", 1024, minimum=1)
    monkeypatch.setenv("MAX_UPLOAD_MB", "0")
    with pytest.raises(ImproperlyConfigured, match="MAX_UPLOAD_MB=0 is out of range"):
        env.env_int("MAX_UPLOAD_MB", 1024, minimum=1)
    monkeypatch.setenv("MAX_UPLOAD_MB", " 12 ")
    assert env.env_int("MAX_UPLOAD_MB", 1024, minimum=1) == 12


def test_env_list_splits_on_commas_and_drops_blanks(monkeypatch):
    monkeypatch.setenv("ALLOWED_HOSTS", "a.example, b.example,,")
    assert env.env_list("ALLOWED_HOSTS", []) == ["a.example", "b.example"]


def test_sqlite_url_is_relative_to_the_project_unless_absolute(tmp_path):
    relative = env.database_from_url("sqlite:///var/db.sqlite3", tmp_path)
    assert relative["NAME"] == str(tmp_path / "var/db.sqlite3")
    absolute = env.database_from_url("sqlite:////tmp/x.sqlite3", tmp_path)
    assert absolute["NAME"] == "/tmp/x.sqlite3"


def test_postgres_url_gives_each_connection_part():
    db = env.database_from_url("postgres://bob:p%40ss@db.internal:6543/jobs?sslmode=require", Path("/"))
    assert (db["ENGINE"], db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "django.db.backends.postgresql", "jobs", "bob", "p@ss", "db.internal", "6543")
    assert db["OPTIONS"] == {"sslmode": "require", "server_side_binding": True, "prepare_threshold": 5}


def test_a_postgres_url_can_turn_server_binding_and_prepared_statements_off_for_a_pooler():
    db = env.database_from_url("postgres://h/jobs?server_side_binding=false&prepare_threshold=none", Path("/"))
    assert db["OPTIONS"] == {"server_side_binding": False, "prepare_threshold": None}
    prepare_always = env.database_from_url("postgres://h/jobs?prepare_threshold=0", Path("/"))
    assert prepare_always["OPTIONS"]["prepare_threshold"] == 0


def test_on_postgresql_a_repeated_query_runs_as_a_prepared_statement(django_db_blocker):
    """Through Django's own PostgreSQL backend, configured from a URL as settings.py does (the server and the
    database every test run has, queried read-only)."""
    from django.db.utils import ConnectionHandler

    handler = ConnectionHandler({"default": env.database_from_url("postgres://postgres@127.0.0.1:5432/test",
                                                                  Path("/"))})
    try:
        with django_db_blocker.unblock(), handler["default"].cursor() as cursor:
            for n in range(env.PREPARE_THRESHOLD + 1):
                cursor.execute("SELECT %s + 1", [n])
                assert cursor.fetchone() == (n + 1,)
            cursor.execute("SELECT statement FROM pg_prepared_statements")
            assert [row[0] for row in cursor.fetchall()] == ["SELECT $1 + 1"]
    finally:
        handler.close_all()


@pytest.mark.parametrize("url, message", [
    ("mysql://x/y", "unsupported scheme 'mysql'"),
    ("postgres://host/", "names no database"),
    ("postgres://host:port/db", "port that is not a number"),
    ("sqlite://", "names no SQLite file"),
    ("postgres://h/db?server_side_binding=maybe", "server_side_binding='maybe' is not a yes/no value"),
    ("postgres://h/db?prepare_threshold=-1", "prepare_threshold='-1' is not a count of runs or none"),
])
def test_bad_database_urls_say_what_is_wrong(url, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        env.database_from_url(url, Path("/"))


def test_secret_key_is_generated_once_and_kept_private(tmp_path, monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    key_file = tmp_path / "var" / "secret_key"
    first = env.secret_key(False, key_file)
    assert len(first) >= 50
    assert env.secret_key(False, key_file) == first
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_production_requires_a_long_secret_key(tmp_path, monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY is required"):
        env.secret_key(True, tmp_path / "k")
    monkeypatch.setenv("SECRET_KEY", "short")
    with pytest.raises(ImproperlyConfigured, match="at least 32 characters"):
        env.secret_key(True, tmp_path / "k")


def load_settings(**environ) -> subprocess.CompletedProcess:
    """Import webapp.settings in a fresh interpreter with the given environment."""
    child_env = {k: v for k, v in os.environ.items()
                 if k not in {"DATABASE_URL", "SECRET_KEY", "PRODUCTION", "ALLOWED_HOSTS"}}
    child_env.update(environ)
    code = "import webapp.settings as s; print(s.DEBUG, s.MAX_UPLOAD_MB, s.DATABASES['default']['ENGINE'])"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=child_env, capture_output=True, text=True)


def test_settings_module_fails_clearly_on_a_bad_value(tmp_path):
    result = load_settings(VAR_DIR=str(tmp_path), MAX_UPLOAD_MB="-5")
    assert result.returncode != 0
    assert "ImproperlyConfigured: MAX_UPLOAD_MB=-5 is out of range" in result.stderr


def test_playground_bounds_come_from_the_environment_and_are_checked(tmp_path):
    result = load_settings(VAR_DIR=str(tmp_path), PLAYGROUND_CACHE_SIZE="0")
    assert "ImproperlyConfigured: PLAYGROUND_CACHE_SIZE=0 is out of range" in result.stderr


def test_settings_module_defaults_to_sqlite_and_debug_locally(tmp_path):
    result = load_settings(VAR_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "1024", "django.db.backends.sqlite3"]


def test_production_settings_refuse_to_start_without_a_secret_key(tmp_path):
    result = load_settings(VAR_DIR=str(tmp_path), PRODUCTION="1")
    assert "SECRET_KEY is required when PRODUCTION is on" in result.stderr


def test_production_settings_refuse_to_start_without_allowed_hosts(tmp_path):
    unset = load_settings(VAR_DIR=str(tmp_path), PRODUCTION="1", SECRET_KEY=secrets.token_urlsafe(50))
    assert unset.returncode != 0
    assert "ImproperlyConfigured: ALLOWED_HOSTS is required when PRODUCTION is on" in unset.stderr
    blank = load_settings(VAR_DIR=str(tmp_path), PRODUCTION="1", SECRET_KEY=secrets.token_urlsafe(50),
                          ALLOWED_HOSTS=" , ")
    assert "ImproperlyConfigured: ALLOWED_HOSTS is required when PRODUCTION is on" in blank.stderr


def test_allowed_hosts_default_to_loopback_names_only_outside_production(monkeypatch):
    monkeypatch.delenv("ALLOWED_HOSTS", raising=False)
    assert env.allowed_hosts(False) == ["localhost", "127.0.0.1", "[::1]"]
    monkeypatch.setenv("ALLOWED_HOSTS", "loraworks.example")
    assert env.allowed_hosts(True) == ["loraworks.example"]


@pytest.mark.parametrize("text, rate", [
    ("30/hour", (30, 3600)), (" 5 / Minutes ", (5, 60)), ("2/second", (2, 1)), ("7/day", (7, 86400)),
    ("12", (12, 60)), ("0", None), ("", None),
])
def test_rate_limits_parse_into_a_count_and_a_period_in_seconds(monkeypatch, text, rate):
    monkeypatch.setenv("API_RATE_LIMIT_JOBS", text)
    assert env.env_rate("API_RATE_LIMIT_JOBS", "30/hour") == rate


@pytest.mark.parametrize("text", ["lots/hour", "30/fortnight", "-3/hour", "0/hour", "/hour", "30/hour/2"])
def test_a_bad_rate_limit_names_the_variable_and_the_expected_shape(monkeypatch, text):
    monkeypatch.setenv("API_RATE_LIMIT_PLAYGROUND", text)
    with pytest.raises(ImproperlyConfigured) as raised:
        env.env_rate("API_RATE_LIMIT_PLAYGROUND", "60/minute")
    assert str(raised.value).startswith(f"API_RATE_LIMIT_PLAYGROUND={text!r} is not a rate limit")
    assert "e.g. 30/hour (periods: second, minute, hour, day)" in str(raised.value)


def test_settings_parse_rate_limits_at_start_up_and_refuse_a_bad_one(tmp_path):
    code = "import webapp.settings as s; print(s.API_RATE_LIMIT_JOBS, s.API_RATE_LIMIT_PLAYGROUND)"
    child_env = dict(os.environ, VAR_DIR=str(tmp_path), API_RATE_LIMIT_JOBS="3/day", API_RATE_LIMIT_PLAYGROUND="0")
    good = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=child_env, capture_output=True, text=True)
    assert good.stdout.strip() == "Rate(count=3, period_s=86400) None", good.stderr
    bad = load_settings(VAR_DIR=str(tmp_path), API_RATE_LIMIT_JOBS="thirty an hour")
    assert bad.returncode != 0
    assert "ImproperlyConfigured: API_RATE_LIMIT_JOBS='thirty an hour' is not a rate limit" in bad.stderr


def test_log_level_is_one_of_the_logging_levels_in_any_case(tmp_path, monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "warning")
    assert env.env_choice("LOG_LEVEL", "INFO", env.LOG_LEVELS) == "WARNING"
    result = load_settings(VAR_DIR=str(tmp_path), LOG_LEVEL="LOUD")
    assert result.returncode != 0
    assert "ImproperlyConfigured: LOG_LEVEL='LOUD' is not one of: DEBUG, INFO, WARNING, ERROR, CRITICAL" in (
        result.stderr)


def test_redis_url_with_another_scheme_names_the_variable_and_the_schemes_it_takes(tmp_path):
    result = load_settings(VAR_DIR=str(tmp_path), REDIS_URL="http://127.0.0.1:6379/0")
    assert result.returncode != 0
    assert ("ImproperlyConfigured: REDIS_URL='http://127.0.0.1:6379/0' must be a URL starting with one of: "
            "redis://, rediss://, unix://") in result.stderr


@pytest.mark.parametrize("name, value, message", [
    ("PORT", "eighty", "PORT='eighty' is not a whole number"),
    ("PORT", "70000", "PORT=70000 is out of range: it must be from 1 to 65535"),
    ("WORKER_CONCURRENCY", "0", "WORKER_CONCURRENCY=0 is out of range"),
    ("WEB_CONCURRENCY", "two", "WEB_CONCURRENCY='two' is not a whole number"),
])
def test_the_run_command_refuses_a_bad_port_or_concurrency_before_starting_anything(tmp_path, name, value, message):
    child_env = dict(os.environ, VAR_DIR=str(tmp_path), DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3",
                     **{name: value})
    result = subprocess.run([sys.executable, "-m", "webapp.localrun"], cwd=ROOT, env=child_env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"error: {message}" in result.stderr
    assert not (tmp_path / "db.sqlite3").exists()  # refused before migrating, so nothing was started either


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    child_env = dict(os.environ, VAR_DIR=str(tmp_path), PRODUCTION="1", SECRET_KEY=secrets.token_urlsafe(50),
                     ALLOWED_HOSTS="loraworks.example", DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3")
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                            cwd=ROOT, env=child_env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
