"""The job state machine: every allowed move, every refused one, the events and timestamps they record."""
import itertools

import pytest

from webapp.jobs import states
from webapp.jobs.models import Job, JobEvent
from webapp.teams.models import Team

ALL = [s for s, _ in states.CHOICES]
ALLOWED = sorted((a, b) for a in ALL for b in states.ALLOWED[a])
REFUSED = sorted((a, b) for a, b in itertools.product(ALL, ALL) if b not in states.ALLOWED[a])


@pytest.fixture
def job(db):
    from webapp.catalog.models import BaseModel
    from webapp.datasets.models import Dataset

    team = Team.objects.create(name="T", slug="t")
    model = BaseModel.objects.create(name="m", source="org/m", status="ready")
    dataset = Dataset.objects.create(team=team, name="d", original_filename="d.jsonl", file="datasets/d.jsonl",
                                     status="ready", task="causal-lm")
    return Job.objects.create(team=team, name="j", base_model=model, dataset=dataset, task="causal-lm")


def test_the_machine_is_the_one_the_issue_describes():
    assert states.ALLOWED[states.VALIDATING] == {states.QUEUED, states.FAILED, states.CANCELLED}
    assert states.ALLOWED[states.QUEUED] == {states.RUNNING, states.FAILED, states.CANCELLED}
    assert states.ALLOWED[states.RUNNING] == {states.RUNNING, states.SUCCEEDED, states.FAILED, states.CANCELLED}
    assert all(not states.ALLOWED[s] for s in states.TERMINAL)


@pytest.mark.parametrize("source,target", ALLOWED)
def test_an_allowed_move_changes_the_state_and_records_an_event(job, source, target):
    Job.objects.filter(pk=job.pk).update(state=source)
    job.refresh_from_db()
    states.move(job, target, reason="because")
    job.refresh_from_db()
    assert job.state == target
    event = JobEvent.objects.filter(job=job).last()
    assert (event.from_state, event.to_state, event.reason) == (source, target, "because")
    if target == states.QUEUED:
        assert job.queued_at is not None
    if target == states.RUNNING:
        assert job.started_at is not None and job.heartbeat_at is not None
    if target in states.TERMINAL:
        assert job.finished_at is not None


@pytest.mark.parametrize("source,target", REFUSED)
def test_a_refused_move_raises_and_changes_nothing(job, source, target):
    Job.objects.filter(pk=job.pk).update(state=source)
    job.refresh_from_db()
    with pytest.raises(states.TransitionRefused, match=f"is {source}: it cannot become {target}"):
        states.move(job, target)
    job.refresh_from_db()
    assert job.state == source
    assert not JobEvent.objects.filter(job=job).exists()


def test_a_move_decides_from_the_row_not_from_a_stale_copy(job):
    stale = Job.objects.get(pk=job.pk)
    states.move(job, states.CANCELLED)  # another process cancels it first
    with pytest.raises(states.TransitionRefused, match="is cancelled"):
        states.move(stale, states.RUNNING)
    assert Job.objects.get(pk=job.pk).state == states.CANCELLED


def test_fields_are_written_with_the_move_and_a_resumed_run_keeps_its_first_start(job):
    states.move(job, states.RUNNING, worker_name="w1")
    first_start = job.started_at
    states.move(job, states.RUNNING, worker_name="w2", reason="resumed")
    assert job.worker_name == "w2" and job.started_at == first_start
    states.move(job, states.FAILED, error="out of memory: lower batch_size")
    assert job.error == "out of memory: lower batch_size"


def test_a_move_of_a_deleted_job_is_refused(job):
    Job.objects.filter(pk=job.pk).delete()
    with pytest.raises(states.TransitionRefused, match="does not exist"):
        states.move(job, states.RUNNING)
