"""The worker's progress reporter: every step to Redis at once, the database at most every interval and at every
eval, the cancel flag as should_stop, brief retries when the database is unreachable, and the job lease."""
import json

import pytest
from django.db import OperationalError

from jobs_helpers import completion_rows, make_job, stored_dataset

from webapp.jobs import live
from webapp.jobs.models import Job
from webapp.teams.models import Team
from workers import progress


@pytest.fixture
def job(db):
    from webapp.catalog.models import BaseModel

    team = Team.objects.create(name="R", slug="r")
    model = BaseModel.objects.create(name="m", source="org/m", status="ready")
    return make_job(team, model, stored_dataset(team, completion_rows(4), task="causal-lm"), state="running")


def test_steps_reach_redis_at_once_and_the_database_only_at_the_interval_or_an_eval(job):
    reporter = progress.JobReporter(job, db_interval_s=3600)
    reporter.last_flush = float("inf")  # as if it had just written
    pubsub = live.subscribe(job.pk)
    for step in range(1, 6):
        reporter.on_step(step, 10, 2.0 / step, 1e-4, 500.0, 10.0 - step)
    assert live.latest(job.pk)["step"] == 5 and live.latest(job.pk)["loss"] == 0.4
    relayed = [m for m in (pubsub.get_message(timeout=0.2) for _ in range(10)) if m]
    assert [json.loads(m["data"])["step"] for m in relayed] == [1, 2, 3, 4, 5]
    assert Job.objects.get(pk=job.pk).progress == {}
    reporter.on_eval({"stage": "during", "step": 5, "eval_loss": 1.2, "perplexity": 3.3, "confusion": [[1]]})
    saved = Job.objects.get(pk=job.pk)
    assert saved.progress["step"] == 5 and saved.heartbeat_at is not None
    assert saved.history[-1] == {"step": 5, "stage": "during", "eval": {"loss": 1.2, "perplexity": 3.3}}
    assert [p["step"] for p in saved.history if "loss" in p] == [1, 2, 3, 4, 5]


def test_log_lines_show_file_names_not_the_workers_paths(job):
    reporter = progress.JobReporter(job)
    from webapp.jobs import conf

    reporter.on_log(f"data: {conf.work_dir()}/job-1-ab12/data.csv (140 rows), model /srv/models/llama, see ./x/y")
    reporter.flush()
    line = Job.objects.get(pk=job.pk).log_tail.splitlines()[-1]
    assert line.endswith("data: data.csv (140 rows), model /srv/models/llama, see ./x/y")
    assert live.log_lines(job.pk)[-1] == line


def test_log_lines_are_kept_as_a_tail_and_published(job):
    reporter = progress.JobReporter(job)
    for i in range(progress.LOG_TAIL_LINES + 5):
        reporter.on_log(f"line {i}")
    reporter.flush()
    tail = Job.objects.get(pk=job.pk).log_tail.splitlines()
    assert len(tail) == progress.LOG_TAIL_LINES and tail[-1].endswith(f"line {progress.LOG_TAIL_LINES + 4}")
    assert live.log_lines(job.pk, 1)[0].endswith(f"line {progress.LOG_TAIL_LINES + 4}")


def test_a_new_job_starts_with_clean_live_keys(job):
    live.request_cancel(job.pk)
    live.publish(job.pk, {"type": "step", "step": 3})
    from webapp.jobs import states

    states.record_creation(job, "again")  # as when a rebuilt database hands out the same id
    assert not live.cancel_requested(job.pk) and live.latest(job.pk) is None


def test_installs_on_other_databases_of_one_redis_server_do_not_hear_each_others_jobs(job, settings):
    """Pub/sub ignores the database number; the channel name must not."""
    ours = live.subscribe(job.pk)
    ours.get_message(timeout=1)  # the subscribe confirmation
    other_db = 14 if live.client().connection_pool.connection_kwargs.get("db") != 14 else 13
    settings.REDIS_URL = settings.REDIS_URL.rsplit("/", 1)[0] + f"/{other_db}"
    theirs = live.subscribe(job.pk)
    theirs.get_message(timeout=1)
    live.publish(job.pk, {"type": "log", "line": "from the other install"})
    heard = theirs.get_message(timeout=1)
    assert heard and json.loads(heard["data"])["line"] == "from the other install"
    live.client().delete(live.key(job.pk, "log"))
    assert ours.get_message(timeout=0.5) is None


def test_should_stop_follows_the_cancel_flag(job):
    reporter = progress.JobReporter(job)
    assert reporter.should_stop() is False
    live.request_cancel(job.pk)
    assert reporter.should_stop() is True


def test_should_stop_also_follows_the_cancel_recorded_on_the_row_when_redis_is_down_or_lost_it(job, settings):
    from django.utils import timezone

    reporter = progress.JobReporter(job, db_interval_s=3600)
    assert reporter.should_stop() is False  # the first call reads the row too
    Job.objects.filter(pk=job.pk).update(cancel_requested_at=timezone.now())  # no Redis flag: lost in a restart
    assert reporter.should_stop() is False  # the row is read at the database cadence, not every step
    reporter.last_cancel_read -= 3600  # the interval has passed
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # and Redis is down: nothing listens on port 1
    assert reporter.should_stop() is True
    assert reporter.should_stop() is True  # it stays stopped


def test_a_resumed_run_forgets_progress_recorded_after_its_checkpoint(job):
    Job.objects.filter(pk=job.pk).update(history=[{"step": s, "loss": 1.0, "lr": 0.1} for s in range(1, 9)])
    reporter = progress.JobReporter(Job.objects.get(pk=job.pk))
    reporter.resume_from(5)
    assert [p["step"] for p in reporter.history] == [1, 2, 3, 4, 5]


def test_database_writes_are_retried_while_it_is_unreachable(monkeypatch):
    monkeypatch.setattr(progress.time, "sleep", lambda s: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("could not connect to server")
        return "written"

    assert progress.retry_db(flaky) == "written" and len(calls) == 3
    with pytest.raises(OperationalError):
        progress.retry_db(lambda: (_ for _ in ()).throw(OperationalError("down")), attempts=2)


def test_history_is_thinned_past_its_limit_keeping_the_last_point():
    points = [{"step": s} for s in range(1, 11)]
    thinned = progress.thin(points, limit=5)
    assert [p["step"] for p in thinned] == [1, 3, 5, 7, 9, 10]


def test_only_one_holder_gets_a_jobs_lease_until_it_lets_go(db):
    with progress.job_lease(999, wait_s=0) as first:
        assert first
        with progress.job_lease(999, wait_s=0.6) as second:
            assert second is None
    with progress.job_lease(999, wait_s=0) as again:
        assert again
