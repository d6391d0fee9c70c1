"""A cancelled job's kept checkpoint in Chromium: its page offers the adapter of that checkpoint as a zip (which
loads back with PEFT's layout) and "Continue from this checkpoint", which opens the job form starting from it."""
import io
import zipfile

import pytest
from safetensors.torch import load

import finished_jobs
from webapp.teams.models import Team

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return finished_jobs.build_artifacts("llama", tmp_path_factory.mktemp("kept-run"))


def test_a_cancelled_jobs_kept_checkpoint_downloads_and_continues(signed_in, at_width, shoot, run):
    page = signed_in("kim", "Kept team")
    job = finished_jobs.make_job(Team.objects.get(name="Kept team"), run, name="Stopped early", state="cancelled")
    job.artifacts = {**finished_jobs.upload(run, job.pk), "merged": None, "kept_step": 40}
    job.save(update_fields=["artifacts"])

    page.goto(f"/jobs/{job.pk}/")
    card = page.locator("#kept-checkpoint")
    assert "cancelled at step 40" in card.inner_text()
    with page.expect_download() as started:
        card.get_by_role("link", name="Download adapter (step 40)").click()
    with open(started.value.path(), "rb") as handle:
        archive = zipfile.ZipFile(io.BytesIO(handle.read()))
    folder = f"loraworks-{job.pk}-stopped-early-adapter"
    assert {f"{folder}/adapter_config.json", f"{folder}/adapter_model.safetensors"} <= set(archive.namelist())
    shipped = load(archive.read(f"{folder}/adapter_model.safetensors"))
    saved = load((run / "out" / "adapter" / "adapter_model.safetensors").read_bytes())
    assert shipped.keys() == saved.keys() and all((shipped[k] == saved[k]).all() for k in saved)
    for width in ("desktop", "phone"):
        at_width(page, width)
        shoot(page, f"kept-{width}")

    at_width(page, "desktop")
    page.locator("#kept-checkpoint").get_by_role("link", name="Continue from this checkpoint").click()
    page.wait_for_url("**/jobs/new/**")
    assert page.input_value("select[name=start_from]") == str(job.pk)
    assert page.input_value("input[name=name]") == "Stopped early (continued)"
    assert f"{job.name} (cancelled)" in page.inner_text("select[name=start_from] option:checked")
    shoot(page, "continue-form")
