"""At 390 px in Chromium: the jobs list, a classifier's results (confusion matrices, changed predictions) and the
opened menu fit the phone's width (a table wider than that would scroll inside its card); chart labels stay
readable. At 1400 px the changed predictions keep each label on one line."""
import pytest

import finished_jobs
from jobs_helpers import make_job
from webapp.teams.models import Team

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_lists_results_and_the_menu_fit_a_phone(signed_in, at_width, shoot, bert_run):
    page = signed_in("jo", "Phone team")
    team = Team.objects.get(name="Phone team")
    job = finished_jobs.make_job(team, bert_run, name="A rather long job name for a small screen")
    for i in range(3):
        make_job(team, job.base_model, job.dataset, state="running", name=f"run {i}",
                 progress={"step": i + 1, "total_steps": 10}, worker_name="gpu-worker-with-a-long-host-name")

    page.goto("/jobs/")
    at_width(page, "phone")
    table = page.locator("table.jobs")
    box = table.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    shown = table.locator("th").evaluate_all(
        "ths => ths.filter(th => getComputedStyle(th).display !== 'none').map(th => th.textContent)")
    assert shown == ["Job", "State", "Progress"]
    shoot(page, "jobs")

    page.goto(f"/jobs/{job.pk}/results/")
    at_width(page, "phone")
    for matrix in page.locator("table.matrix").all():
        box = matrix.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    changes = page.locator("#prediction-changes table.changes").bounding_box()
    assert changes["x"] >= 0 and changes["x"] + changes["width"] <= 390, changes
    sizes = page.locator("svg.chart text").evaluate_all(
        "texts => texts.map(t => t.getBoundingClientRect().height)")
    assert sizes and min(sizes) >= 8, sizes  # rendered label height in CSS pixels
    shoot(page, "results")

    page.click("label.nav-toggle-label")
    page.click("details.user-menu summary")
    menu = page.locator("details.user-menu .menu").bounding_box()
    assert menu["x"] >= 0 and menu["x"] + menu["width"] <= 390, menu
    for link in ("Datasets", "Jobs", "Playground", "Models"):
        assert page.is_visible(f"nav.nav >> text={link}")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    shoot(page, "menu")


def test_changed_predictions_read_as_a_table_in_a_desktop_window(signed_in, at_width, shoot, bert_run):
    page = signed_in("jo", "Desk team")
    job = finished_jobs.make_job(Team.objects.get(name="Desk team"), bert_run)
    page.goto(f"/jobs/{job.pk}/results/")
    at_width(page, "desktop")
    section = page.locator("#prediction-changes")
    assert "7 of 12 held-out rows are predicted differently after tuning: 6 fixed (wrong → right), 0 broken" in \
        " ".join(section.locator("p").inner_text().split())
    rows = section.locator("tbody tr")
    assert rows.count() == 7
    first = job.metrics["prediction_changes"]["rows"][0]
    assert rows.nth(0).locator("td").all_inner_texts() == [first["text"], first["label"], first["before"],
                                                           first["after"]]
    assert rows.nth(0).get_attribute("class") == "fixed" and rows.nth(6).get_attribute("class") == ""
    short, long = rows.nth(0).bounding_box(), rows.nth(4).bounding_box()
    assert long["height"] > 2 * short["height"]  # the 320-character link wraps inside its cell...
    assert rows.nth(4).locator("td").first.evaluate("td => td.scrollWidth <= td.clientWidth")  # ...within it
    box = section.locator("table").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 1400, box
    shoot(page, "changed-predictions")
