"""Deleting in Chromium: a finished job (after a confirmation) takes its files out of storage, the dataset it used
can then be deleted, and the team page shows the storage the team uses before and after."""
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.storage import default_storage

import finished_jobs
from jobs_helpers import completion_rows, make_job, stored_dataset
from webapp.datasets.models import Dataset
from webapp.jobs.models import Job
from webapp.teams.models import Team

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def bytes_on_disk(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def test_deleting_a_job_frees_its_files_and_then_its_dataset_can_go(signed_in, at_width, shoot, bert_run):
    page = signed_in("dora", "Tidy team")
    team = Team.objects.get(name="Tidy team")
    job = finished_jobs.make_job(team, bert_run, name="Old run")
    dataset = stored_dataset(team, completion_rows(), task="classification", name="Old tickets")
    Job.objects.filter(pk=job.pk).update(dataset=dataset)
    waiting = make_job(team, job.base_model, dataset, state="queued", name="Waiting run")
    job_folder = Path(settings.MEDIA_ROOT) / "jobs" / str(job.pk)
    assert bytes_on_disk(job_folder) > 0
    # Ids restart with each test's fresh tables, so an earlier test may have left files under the waiting job's id.
    job_bytes = bytes_on_disk(job_folder) + bytes_on_disk(job_folder.parent / str(waiting.pk))

    page.goto(f"/teams/{team.pk}/")
    usage = page.locator("#storage-usage")
    assert usage.locator("[data-bytes]").evaluate_all("cells => cells.map(c => +c.dataset.bytes)") == [
        dataset.size_bytes, job_bytes]
    at_width(page, "phone")
    shoot(page, "team-storage-phone")
    at_width(page, "desktop")

    page.goto(f"/datasets/{dataset.pk}/")  # in use by two jobs: refused, naming them
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Delete')")
    assert "cannot be deleted" in page.inner_text(".messages") and "Waiting run" in page.inner_text(".messages")

    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
    for doomed in (waiting, job):  # the queued one is cancelled first, then deleted
        page.goto(f"/jobs/{doomed.pk}/")
        shoot(page, f"job-{doomed.state}")
        with page.expect_navigation(url="**/jobs/"):
            page.click("#delete-job")
        assert f"Deleted job “{doomed.name}” and its files." in page.inner_text(".messages")
        assert not Job.objects.filter(pk=doomed.pk).exists()
    assert "It is cancelled first." in dialogs[0] and "It is cancelled first." not in dialogs[1]
    assert bytes_on_disk(job_folder) == 0
    assert page.goto(f"/jobs/{job.pk}/").status == 404

    page.goto(f"/datasets/{dataset.pk}/")
    with page.expect_navigation(url="**/datasets/"):
        page.click("button:has-text('Delete')")
    assert not Dataset.objects.filter(pk=dataset.pk).exists() and not default_storage.exists(dataset.file.name)
    page.goto(f"/teams/{team.pk}/")
    assert usage.locator("[data-bytes]").evaluate_all("cells => cells.map(c => +c.dataset.bytes)") == [0, 0]
    shoot(page, "team-storage-after")
