"""The dashboard as a team's home, in Chromium at 1400 and 390 px: a three-step start for an empty team; then jobs
in progress whose bars follow their progress without a reload, recent results with their headline metric, and the
team's datasets."""
import pytest

import finished_jobs
from jobs_helpers import completion_rows, make_job, stored_dataset
from webapp.teams.models import Team

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_an_empty_team_sees_three_steps_to_a_first_model(signed_in, at_width, shoot):
    page = signed_in("newbie", "Fresh team")
    page.goto("/")
    for width in ("desktop", "phone"):
        at_width(page, width)
        steps = page.locator("#start ol.steps > li")
        assert steps.count() == 3
        assert [steps.nth(i).locator("strong").inner_text() for i in range(3)] == [
            "Add a dataset.", "Start a job.", "Try it."]
        shoot(page, f"empty-{width}")
    with page.expect_navigation(url="**/datasets/upload/"):
        page.click("#start a.button")


def test_the_dashboard_follows_running_jobs_and_shows_results_and_datasets(signed_in, at_width, shoot, bert_run):
    page = signed_in("carol", "Busy team")
    team = Team.objects.get(name="Busy team")
    finished = finished_jobs.make_job(team, bert_run, name="Ticket router")
    chat = stored_dataset(team, completion_rows(), task="causal-lm", name="Capitals")
    running = make_job(team, finished.base_model, chat, state="running", name="Capitals run",
                       progress={"step": 2, "total_steps": 10})

    page.goto("/")
    active = page.locator("#active-jobs .dash-job")
    assert active.count() == 1 and "Capitals run" in active.inner_text()
    assert active.locator("[data-live=bar]").evaluate("el => el.style.width") == "20%"
    result = page.locator("#recent-results .dash-result")
    before, after = (finished.metrics[side]["accuracy"] for side in ("base_eval", "final_eval"))
    assert "Ticket router" in result.inner_text()
    assert result.locator(".headline").inner_text() == f"Accuracy {100 * before:.1f} % → {100 * after:.1f} %"
    datasets = page.locator("#team-datasets").inner_text()
    assert "Capitals" in datasets and "48 rows" in datasets and "Ticket router data" in datasets

    # The worker writes progress; the page (no reload) moves its bar and step count, then shows the state change.
    type(running).objects.filter(pk=running.pk).update(progress={"step": 7, "total_steps": 10})
    page.wait_for_function("document.querySelector('#active-jobs [data-live=bar]').style.width === '70%'")
    assert active.locator("[data-live=steps]").inner_text() == "step 7 of 10"
    type(running).objects.filter(pk=running.pk).update(state="succeeded")
    page.wait_for_function("document.querySelector('#active-jobs [data-live=state]').textContent === 'succeeded'")
    for width in ("desktop", "phone"):
        at_width(page, width)
        shoot(page, f"home-{width}")
    assert page.locator("#recent-results .dash-result").count() == 2  # the reload lists the job with the results
