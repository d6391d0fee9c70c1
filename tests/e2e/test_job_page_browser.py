"""The job page in Chromium while its job changes, with no reload by the test: the history gains each state, the
eval loss is drawn (the legend lists it), the y-axis labels differ, a cancelled job shows no ETA (page and API),
settings have human labels, and the log shows file names, not the worker's paths. At 1400 and 390 px."""
import json

import pytest

from jobs_helpers import completion_rows, make_job, stored_dataset
from webapp.catalog.models import BaseModel
from webapp.jobs import conf, live, states
from webapp.teams.models import Team
from workers.progress import JobReporter

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
SETTINGS = {"max_steps": 12, "grad_accum": 2, "merge": True, "lr": 0.0002,
            "lora": {"rank": 8, "alpha": 16, "targets": "attention"}}


def test_the_job_page_follows_its_job_and_speaks_plainly(signed_in, at_width, shoot):
    page = signed_in("gus", "Watch team")
    team = Team.objects.get(name="Watch team")
    model = BaseModel.objects.create(name="tiny", source="org/tiny", status="ready", task_types=["causal-lm"])
    job = make_job(team, model, stored_dataset(team, completion_rows(), task="causal-lm"), settings=SETTINGS,
                   name="Capitals")
    page.goto(f"/jobs/{job.pk}/")
    settings = page.inner_text("table.settings")
    for label in ("Max steps", "Gradient accumulation", "Learning rate", "Merge at end", "LoRA rank"):
        assert label in settings
    assert "MAX_STEPS" not in settings.upper().replace("MAX STEPS", "") and "True" not in settings
    page.wait_for_function("document.querySelector('[data-live=events]').children.length === 1")

    states.move(job, states.RUNNING, reason="picked up by a test worker")
    page.wait_for_function("document.querySelector('[data-live=events]').children.length === 2")
    assert "running" in page.inner_text("[data-live=events] li:last-child")
    assert "picked up by a test worker" in page.inner_text("[data-live=events] li:last-child")
    reporter = JobReporter(job)
    reporter.on_eval({"stage": "base", "step": 0, "eval_loss": 1.104})
    for step, loss in ((1, 1.101), (2, 1.097), (3, 1.092)):
        reporter.on_step(step, 12, loss, 2e-4, 400.0, 177.0)
    reporter.on_eval({"stage": "during", "step": 3, "eval_loss": 1.095})
    reporter.on_log(f"reading {conf.work_dir()}/job-1-ab12/data.csv")
    page.wait_for_function("document.querySelectorAll('#loss-chart circle.dot.eval').length === 2")
    assert page.locator("#loss-chart path.line.eval").count() == 1
    labels = page.locator("#loss-chart text[text-anchor=end]").all_text_contents()
    ticks = [text for text in labels if not text.startswith("step")]
    assert len(ticks) == 3 and len(set(ticks)) == 3, ticks
    assert page.inner_text("[data-live=eta]") == "2m 57s"
    page.wait_for_function("document.querySelector('#log').textContent.includes('data.csv')")
    assert str(conf.work_dir()) not in page.inner_text("#log")
    for width in ("desktop", "phone"):
        at_width(page, width)
        page.wait_for_function("document.querySelectorAll('#loss-chart circle.dot.eval').length === 2")
        shoot(page, f"running-{width}")

    states.move(job, states.CANCELLED, reason="cancelled by gus")
    page.wait_for_function("document.querySelector('[data-live=state]').textContent === 'cancelled'")
    page.wait_for_load_state()
    page.wait_for_function("document.querySelector('[data-live=eta]').textContent === '—'")
    assert page.inner_text("[data-live=eta]") == "—"
    assert page.locator("[data-live=events] li").count() == 3
    snapshot = json.loads(page.request.get(f"/jobs/{job.pk}/progress/").text())
    assert snapshot["state"] == "cancelled" and "eta_s" not in snapshot["progress"]
    assert live.latest(job.pk)["eta_s"] == 177.0  # Redis still has the last step's: the page must not show it
    shoot(page, "cancelled")
