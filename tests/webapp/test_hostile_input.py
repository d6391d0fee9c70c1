"""Hostile input, each case sent the way an attacker or a careless script would: job settings out of every range,
a catastrophic target regex, playground requests too large to serve, upload names that climb out of the storage
folder, a gzip bomb, thousands of columns, bytes that are not UTF-8, forms posted without a CSRF token, the
session cookie's flags, and password guessing at speed. Each is refused with a message naming what is wrong, and
nothing is stored for it."""
import gzip
import io
import json
import sys
import time
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse

sys.path.insert(0, str(Path(__file__).resolve().parent))

import finished_jobs  # noqa: E402
from jobs_helpers import completion_rows, stored_dataset, tiny_entry  # noqa: E402
from test_datasets_support import jsonl, raw_upload, upload, wait_validated  # noqa: E402
from webapp.datasets.models import Dataset  # noqa: E402
from webapp.jobs.models import Job  # noqa: E402
from work_counter import counting_work  # noqa: E402

JOB_FORM = {"name": "hostile", "task": "", "rank": 8, "alpha": 16, "dropout": 0.05, "targets": "attention",
            "custom_targets": "", "epochs": 1, "max_steps": "", "lr": 2e-4, "batch_size": 8, "grad_accum": 1,
            "max_length": 128, "warmup": 0.03, "eval_fraction": 0.1, "seed": 0}


@pytest.fixture
def team(member_client):
    return member_client.user.teams.get()


@pytest.fixture
def llama(tmp_path_factory, db):
    return tiny_entry("llama", tmp_path_factory.getbasetemp() / "hostile-llama")


# --- job settings ---------------------------------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("field, value", [
    ("rank", -8), ("rank", 0), ("rank", 10**9), ("rank", "1e400"), ("alpha", "nan"), ("alpha", "-inf"),
    ("dropout", "nan"), ("dropout", 1.5), ("lr", "nan"), ("lr", "inf"), ("lr", -1e-4), ("epochs", "nan"),
    ("epochs", 10**12), ("max_steps", -1), ("max_steps", 10**18), ("batch_size", 10**9), ("grad_accum", -3),
    ("max_length", 10**9), ("warmup", "nan"), ("eval_fraction", -0.5), ("seed", 2**64), ("name", "x" * 10_000),
    ("targets", "../../etc/passwd"), ("custom_targets", "q_proj," * 200),
])
def test_job_settings_out_of_range_are_a_field_error_and_no_job(member_client, team, llama, field, value):
    dataset = stored_dataset(team, completion_rows(), task="causal-lm")
    form = {**JOB_FORM, "base_model": llama.pk, "dataset": dataset.pk, field: value}
    if field == "custom_targets":
        form["targets"] = "custom"
    response = member_client.post(reverse("jobs:create"), form)
    assert response.status_code == 200
    assert field in response.context["form"].errors, response.context["form"].errors
    assert not Job.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("pattern", ["re:(a+)+$", "re:(.*a){30}", "re:((x|x)*)*y", "re:[", "re:(?:.*.*)*="])
def test_a_catastrophic_or_broken_target_regex_is_a_field_error_without_being_run(member_client, team, llama, pattern):
    dataset = stored_dataset(team, completion_rows(), task="causal-lm")
    with counting_work() as work:
        response = member_client.post(reverse("jobs:create"), {**JOB_FORM, "base_model": llama.pk,
                                                               "dataset": dataset.pk, "targets": "custom",
                                                               "custom_targets": pattern})
    assert not work.ran(pattern.removeprefix("re:")), "the web process ran the regex it should refuse unread"
    assert "custom_targets" in response.context["form"].errors
    assert not Job.objects.exists()


@pytest.mark.django_db
@pytest.mark.timeout(30)
@pytest.mark.parametrize("pattern", ["re:(a+)+$", "re:(.*a){30}", "re:((x|x)*)*y", "re:[", "re:(?:.*.*)*=",
                                     "re:" + "a" * 300])
def test_the_live_estimate_refuses_a_catastrophic_or_overlong_target_regex_without_running_it(member_client, llama,
                                                                                              pattern):
    with counting_work() as work:
        response = member_client.get(reverse("jobs:estimate"), {"base_model": llama.pk, "targets": pattern,
                                                                 "rank": 8, "batch_size": 8, "max_length": 64})
    assert not work.ran(pattern.removeprefix("re:")), "the web process ran the regex it should refuse unread"
    assert response.status_code == 400
    assert any(words in response.json()["error"] for words in (
        "repeats a group that itself repeats", "not a valid regular expression", "at most 200 characters"))


# --- playground -----------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("changes, field, words", [
    ({"prompt": "x" * 2**20}, "prompt", "the playground takes at most"),
    ({"prompt": "\U0001F600" * 2**18}, "prompt", "the playground takes at most"),
    ({"max_new_tokens": 10**6}, "max_new_tokens", "at most"),
    ({"max_new_tokens": 10**30}, "max_new_tokens", "at most"),
    ({"temperature": "nan"}, "temperature", "Enter a number."),
    ({"top_p": "inf"}, "top_p", "Enter a number."),
])
def test_playground_requests_too_big_to_serve_get_a_clear_message(member_client, team, llama_run, changes, field,
                                                                  words):
    job = finished_jobs.make_job(team, llama_run)
    form = {"job": job.pk, "prompt": "hi", "temperature": 0.7, "top_p": 0.95, "max_new_tokens": 8, **changes}
    response = member_client.post(reverse("results:playground_run"), form)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert list(errors) == [field] and words and words in " ".join(errors[field]), errors


@pytest.mark.django_db
def test_the_api_playground_bounds_the_same_requests(client, team, member_client, llama_run):
    from webapp.accounts.tokens import issue_token

    job = finished_jobs.make_job(team, llama_run)
    _, secret = issue_token(member_client.user, team, "hostile")
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    for body in ({"prompt": "x" * 2**20}, {"prompt": "hi", "max_new_tokens": 10**6}):
        response = client.post(f"/api/jobs/{job.pk}/playground", body, content_type="application/json", **bearer)
        assert response.status_code == 400 and "at most" in response.content.decode(), response.content[:500]


# --- uploads --------------------------------------------------------------------------------------------------

def stored_dataset_files() -> set[str]:
    return set(default_storage.listdir("datasets")[1]) if default_storage.exists("datasets") else set()


ROWS = jsonl({"prompt": f"q{i}", "completion": f"a{i}"} for i in range(20))


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["../../../../tmp/escaped.jsonl", "..\\..\\escaped.jsonl", "/etc/escaped.jsonl",
                                  "datasets/../../escaped.jsonl", "%2e%2e%2fescaped.jsonl", "escaped.jsonl\x00.exe",
                                  ".jsonl"])
def test_path_traversal_names_never_choose_where_a_file_is_stored(member_client, name, tmp_path):
    before = stored_dataset_files()
    response = raw_upload(member_client, name, ROWS)
    added = stored_dataset_files() - before
    assert not Path("/tmp/escaped.jsonl").exists() and not Path("/etc/escaped.jsonl").exists()
    if response.status_code == 302:  # accepted: stored under a name of our own, the user's name only a label
        dataset = Dataset.objects.get()
        assert len(added) == 1 and dataset.file.name == f"datasets/{added.pop()}"
        assert "/" not in dataset.original_filename and "\\" not in dataset.original_filename
        assert "\x00" not in dataset.original_filename
    else:  # refused: said so, and nothing kept
        assert response.status_code in (200, 400) and added == set() and not Dataset.objects.exists()


def zipped_rows() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("rows.jsonl", ROWS)
    return buffer.getvalue()


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["data.exe", "data.jsonl.php", "data", "data.xlsx", "bomb.zip", "rows.jsonl.zip"])
def test_files_of_other_kinds_are_refused_at_upload_and_nothing_is_kept(member_client, name):
    before = stored_dataset_files()
    response = upload(member_client, name, zip_bomb(64) if name.endswith(".zip") else ROWS)
    assert response.status_code in (200, 400) and "JSONL" in response.content.decode()
    assert stored_dataset_files() == before and not Dataset.objects.exists()


@pytest.mark.django_db
def test_a_file_over_the_limit_is_refused_while_it_arrives_and_nothing_is_kept(member_client, settings):
    settings.MAX_UPLOAD_MB = 1
    before = stored_dataset_files()
    response = upload(member_client, "big.jsonl", b"x" * (2 * 2**20))
    assert response.status_code in (200, 400, 413) and "larger than the upload limit" in response.content.decode()
    assert stored_dataset_files() == before and not Dataset.objects.exists()


def gzip_bomb(decompressed_mb: int) -> bytes:
    """A small gzip file of NUL bytes that expands to `decompressed_mb` MB: one endless line."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as out:
        chunk = b"\0" * 2**20
        for _ in range(decompressed_mb):
            out.write(chunk)
    return buffer.getvalue()


def zip_bomb(decompressed_mb: int) -> bytes:
    """A small zip archive holding one JSONL member that expands to `decompressed_mb` MB of NUL bytes."""
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("rows.jsonl", "w", force_zip64=True) as member:
            chunk = b"\0" * 2**20
            for _ in range(decompressed_mb):
                member.write(chunk)
    return buffer.getvalue()


HOSTILE_FILES = {  # case: (file name, its bytes, words of the validation message)
    "gzip bomb (1 GiB of NUL from ~1 MB)": ("bomb.jsonl.gz", lambda: gzip_bomb(1024),
                                            "this file is binary (it contains NUL bytes)"),
    "zip bomb renamed to .jsonl (1 GiB of NUL from ~1 MB)": ("bomb.jsonl", lambda: zip_bomb(1024),
                                                             "it looks like a ZIP archive"),
    "zip of good rows renamed to .jsonl": ("rows.jsonl", lambda: zipped_rows(), "it looks like a ZIP archive"),
    "5,000 columns": ("wide.csv", lambda: (",".join(f"c{i}" for i in range(5000)) + "\n"
                                         + ",".join("v" for _ in range(5000)) + "\n").encode() * 3,
                      "could not recognise the dataset format: the rows have the fields c0, c1"),
    "20 MB single line": ("line.jsonl", lambda: b'{"text": "' + b"a" * (20 * 2**20) + b'"}\n',
                          "no row could be read"),
    "non-UTF-8 JSONL": ("latin.jsonl", lambda: '{"prompt": "caf\xe9", "completion": "cr\xe8me"}\n'.encode("latin-1"),
                        "the file is not UTF-8: byte 15 (0xe9) on line 1"),
    "UTF-16 JSONL": ("wide.jsonl", lambda: ROWS.decode().encode("utf-16"), "the file is UTF-16 text; save it as UTF-8"),
    "JSON nested 100,000 deep": ("deep.json", lambda: b"[" * 100_000 + b"]" * 100_000,
                                 "element 1 (at line 1, column 2) is nested too deeply to read"),
}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("celery_worker")
@pytest.mark.parametrize("case", list(HOSTILE_FILES))
def test_hostile_files_are_kept_as_uploaded_marked_invalid_with_a_clear_message(member_client, case):
    """A file of the right kind is accepted at upload and validated by the worker, which marks it invalid with a
    message naming the problem. What is kept is the upload itself, byte for byte (a bomb is never stored
    expanded), until the user deletes it, which removes it from storage."""
    name, make, words = HOSTILE_FILES[case]
    content = make()  # built before the clock starts: the budget is for upload and validation only
    before = stored_dataset_files()
    started = time.monotonic()
    response = upload(member_client, name, content)
    assert response.status_code == 302, response.content[:500]
    dataset = wait_validated(Dataset.objects.get().pk, timeout_s=120)
    assert time.monotonic() - started < 60, case
    assert dataset.status == Dataset.Status.INVALID and words in dataset.error, (case, dataset.error)
    if case == "20 MB single line":  # the row's own problem is in the report, with its line
        assert "over the" in json.dumps(dataset.report) and "limit for one row" in json.dumps(dataset.report)
    added = stored_dataset_files() - before
    assert [f"datasets/{file}" for file in added] == [dataset.file.name] and dataset.size_bytes == len(content)
    with default_storage.open(dataset.file.name, "rb") as stored:
        assert stored.read() == content
    page = member_client.get(reverse("datasets:detail", args=[dataset.pk])).content.decode()
    assert "Traceback" not in page and dataset.error[:40] in page.replace("&#x27;", "'").replace("&quot;", '"')

    assert member_client.post(reverse("datasets:delete", args=[dataset.pk])).status_code == 302
    assert stored_dataset_files() == before and not Dataset.objects.exists()


# --- forms, cookies, sign-in ----------------------------------------------------------------------------------

def site_routes(patterns=None, prefix="", namespace=""):
    """(namespace, route pattern, {kwarg: converter}) of every URL route outside the token-auth APIs (/api/, /v1/)
    and the admin."""
    from django.urls import URLPattern, URLResolver, get_resolver

    for entry in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(entry, URLResolver):
            if entry.namespace not in ("api", "serving", "admin"):
                yield from site_routes(entry.url_patterns, prefix + str(entry.pattern), entry.namespace or namespace)
        elif isinstance(entry, URLPattern):
            yield namespace, prefix + str(entry.pattern), entry.pattern.converters


def every_site_path(dataset, job, token) -> list[str]:
    """Each site route as a path, its ids those of the fixture's objects (a route that skipped its CSRF check would
    then act on them, which the test looks for)."""
    import re

    ids = {"team_id": job.team_id, "job_id": job.pk, "token_id": token.pk, "name": "support-tickets",
           "kind": "adapter", "request_id": "x"}
    by_namespace = {"datasets": dataset.pk, "jobs": job.pk, "models": job.base_model_id}
    paths = []
    for namespace, route, converters in site_routes():
        values = {name: ids.get(name, by_namespace.get(namespace)) for name in converters}
        paths.append("/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values[m.group(1)]), route))
    return paths


@pytest.mark.django_db
def test_every_page_refuses_a_post_without_its_csrf_token(make_member, team_llama_job):
    dataset, job, token = team_llama_job
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_member("alice", "Team A"))
    paths = every_site_path(dataset, job, token)
    forms = {"/login/", "/logout/", "/teams/switch/", "/datasets/upload/", "/datasets/samples/support-tickets/",
             f"/datasets/{dataset.pk}/analysis/", f"/datasets/{dataset.pk}/columns/",
             f"/datasets/{dataset.pk}/delete/", "/jobs/new/", f"/jobs/{job.pk}/cancel/", "/playground/run/",
             "/account/settings/", f"/account/tokens/{token.pk}/revoke/"}
    assert forms <= set(paths), forms - set(paths)  # the routes are derived, and they include every form
    for path in paths:  # 405: a route that takes no POST at all (a health check outside the CSRF middleware)
        assert client.post(path, {"name": "x"}).status_code in ({403} if path in forms else {403, 405}), path
    assert Dataset.objects.count() == 1 and Job.objects.get().state == job.state
    token.refresh_from_db()
    assert token.revoked_at is None


@pytest.fixture
def team_llama_job(make_member, llama):
    from webapp.accounts.tokens import issue_token
    from webapp.teams.models import Team

    user = make_member("alice", "Team A")
    team = Team.objects.get(name="Team A")
    dataset = stored_dataset(team, completion_rows(), task="causal-lm")
    job = Job.objects.create(team=team, name="j", base_model=llama, dataset=dataset, task="causal-lm",
                             settings={}, state="queued")
    return dataset, job, issue_token(user, team, "csrf")[0]


@pytest.mark.django_db
def test_the_session_cookie_is_http_only_and_same_site(client, make_member):
    make_member("alice", "Team A")
    response = client.post("/login/", {"username": "alice", "password": "pw-for-tests-1"})
    assert response.status_code == 302
    cookie = response.cookies["sessionid"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"


@pytest.fixture
def fresh_throttle(settings):
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter("login-failures:*"):
        client.delete(key)
    yield
    for key in client.scan_iter("login-failures:*"):
        client.delete(key)


def guess(client, password: str, username: str = "alice"):
    return client.post("/login/", {"username": username, "password": password})


def throttled_login(settings, **limits):
    """post(password, username, address) -> (status, page), through the throttled LoginView with these limits."""
    from django.contrib.auth import views as auth_views
    from django.contrib.messages.storage.fallback import FallbackStorage
    from django.contrib.sessions.backends.db import SessionStore
    from django.test import RequestFactory

    from webapp.teams.login_throttle import throttled

    for name, value in limits.items():
        setattr(settings, name, value)
    view = throttled(auth_views.LoginView.as_view())

    def post(password, username="alice", address="127.0.0.1"):
        request = RequestFactory().post("/login/", {"username": username, "password": password},
                                        REMOTE_ADDR=address)
        request._dont_enforce_csrf_checks = True  # as the test client does; CSRF has its own test above
        request.session, request.user = SessionStore(), None
        request._messages = FallbackStorage(request)
        response = view(request)
        if hasattr(response, "render"):
            response.render()
        return response.status_code, response.content.decode()

    return post


@pytest.mark.django_db
@pytest.mark.usefixtures("fresh_throttle")
def test_password_guessing_is_throttled_per_username(make_member, settings):
    make_member("alice", "Team A")
    post = throttled_login(settings, LOGIN_MAX_FAILURES=3)
    assert [post(f"wrong-{i}", username="Alice")[0] for i in range(3)] == [200, 200, 200]  # any case: one name
    status, page = post("pw-for-tests-1")  # even the right password waits out the window
    assert status == 429 and "Too many failed sign-ins. Try again in 15 minutes." in page
    assert post("pw-for-tests-1", address="10.0.0.9")[0] == 429  # the name's count, whatever the address


@pytest.mark.django_db
@pytest.mark.usefixtures("fresh_throttle")
def test_a_successful_sign_in_clears_its_usernames_failure_count(make_member, settings):
    make_member("alice", "Team A")
    post = throttled_login(settings, LOGIN_MAX_FAILURES=3)
    assert [post(f"wrong-{i}")[0] for i in range(2)] == [200, 200]
    assert post("pw-for-tests-1")[0] == 302
    # Counted from zero again: without the reset the third failure here would be the fifth, and refused.
    assert [post(f"again-wrong-{i}")[0] for i in range(3)] == [200, 200, 200]
    assert post("pw-for-tests-1")[0] == 429


@pytest.mark.django_db
@pytest.mark.usefixtures("fresh_throttle")
def test_guessing_across_many_usernames_from_one_address_is_throttled_per_address(make_member, settings):
    make_member("alice", "Team A")
    post = throttled_login(settings, LOGIN_MAX_FAILURES=3, LOGIN_MAX_FAILURES_PER_ADDRESS=4)
    assert [post("guess", username=f"user{i}", address="10.0.0.1")[0] for i in range(4)] == [200] * 4
    status, page = post("pw-for-tests-1", address="10.0.0.1")  # alice herself, never guessed, from that address
    assert status == 429 and "Too many failed sign-ins" in page
    assert post("pw-for-tests-1", address="10.0.0.2")[0] == 302  # another address is not held up


@pytest.mark.django_db
@pytest.mark.usefixtures("fresh_throttle")
def test_the_login_page_is_throttled(client, make_member):
    from django.urls import resolve

    assert getattr(resolve("/login/").func, "login_throttled", False), \
        "webapp/urls.py must wrap the login view in webapp.teams.login_throttle.throttled"
    make_member("alice", "Team A")
    assert {guess(client, f"wrong-{i}").status_code for i in range(5)} == {200}
    assert guess(client, "pw-for-tests-1").status_code == 429


PRODUCTION_COOKIES = """
import django, json
django.setup()
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
call_command("migrate", verbosity=0)
call_command("collectstatic", interactive=False, verbosity=0)  # production pages name the collected files
get_user_model().objects.create_user("alice", password="pw-for-tests-1")
client = Client(secure=True, HTTP_X_FORWARDED_PROTO="https")  # as behind the TLS proxy: else redirected to HTTPS
page = client.get("/login/")
signed_in = client.post("/login/", {"username": "alice", "password": "pw-for-tests-1",
                                    "csrfmiddlewaretoken": page.cookies["csrftoken"].value})
flags = {name: {"secure": bool(morsel["secure"]), "httponly": bool(morsel["httponly"])}
         for response in (page, signed_in) for name, morsel in response.cookies.items()}
print(json.dumps({"status": signed_in.status_code, "cookies": flags}))
"""


def test_the_session_and_csrf_cookies_are_secure_under_production_settings(tmp_path):
    import json
    import os
    import secrets
    import subprocess

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SECRET_KEY")}
    env.update(VAR_DIR=str(tmp_path), PRODUCTION="1", SECRET_KEY=secrets.token_urlsafe(50), ALLOWED_HOSTS="testserver",
               DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3", DJANGO_SETTINGS_MODULE="webapp.settings")
    result = subprocess.run([sys.executable, "-c", PRODUCTION_COOKIES], cwd=root, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["status"] == 302, seen
    assert seen["cookies"]["sessionid"] == {"secure": True, "httponly": True}
    assert seen["cookies"]["csrftoken"]["secure"] is True
