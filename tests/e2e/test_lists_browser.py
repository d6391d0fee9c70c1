"""Long lists in Chromium: the jobs list shows 50 a page with links between pages that keep the state filter and
the name search; the datasets list pages the same way and searches names. 1400 and 390 px."""
import pytest

from jobs_helpers import completion_rows, make_job, stored_dataset
from webapp.catalog.models import BaseModel
from webapp.datasets.models import Dataset
from webapp.jobs.models import Job
from webapp.teams.models import Team

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_jobs_and_datasets_lists_are_paged_filtered_and_searchable(signed_in, at_width, shoot):
    page = signed_in("kim", "Many team")
    team = Team.objects.get(name="Many team")
    model = BaseModel.objects.create(name="tiny", source="org/tiny", status="ready")
    dataset = stored_dataset(team, completion_rows(4), task="causal-lm")
    Dataset.objects.bulk_create([Dataset(team=team, name=f"set {i}", original_filename="x.jsonl", file="x.jsonl",
                                         status="ready") for i in range(55)])
    for i in range(120):
        make_job(team, model, dataset, state="succeeded" if i % 2 else "failed", name=f"capitals {i:03d}")

    page.goto("/jobs/")
    assert page.locator("table.jobs tbody tr").count() == 50
    assert page.inner_text("[data-pager=position]") == "Page 1 of 3 · 120 in all"
    page.click("nav.filters >> text=succeeded")
    assert page.inner_text("[data-pager=position]") == "Page 1 of 2 · 60 in all"
    page.fill("#job-search", "Capitals 1")  # capitals 100-119 (any case), the succeeded (odd) half
    with page.expect_navigation():
        page.click("nav.filters button[type=submit]")
    names = page.locator("table.jobs tbody tr td:first-child a").all_inner_texts()
    assert sorted(names) == sorted(f"capitals {i:03d}" for i in range(100, 120) if i % 2)
    assert page.locator("[data-pager=position]").count() == 0  # one page: no pager
    page.fill("#job-search", "capitals")
    with page.expect_navigation():
        page.click("nav.filters button[type=submit]")
    with page.expect_navigation():
        page.click("a[rel=next]")
    assert "state=succeeded" in page.url and "q=capitals" in page.url and "page=2" in page.url
    rows = page.locator("table.jobs tbody tr td:first-child a").all_inner_texts()
    expected = [job.name for job in Job.objects.filter(team=team, state="succeeded").order_by("-created_at", "-pk")]
    assert rows == expected[50:60]
    for width in ("desktop", "phone"):
        at_width(page, width)
        shoot(page, f"jobs-page-2-{width}")

    page.goto("/datasets/")
    assert page.locator("table#datasets tbody tr").count() == 50
    assert page.inner_text("[data-pager=position]") == "Page 1 of 2 · 56 in all"
    with page.expect_navigation():
        page.click("a[rel=next]")
    assert page.locator("table#datasets tbody tr").count() == 6
    page.fill("#dataset-search", "SET 5")  # set 5 and set 50-54, any case
    with page.expect_navigation():
        page.click("nav.filters button[type=submit]")
    names = page.locator("table#datasets tbody tr td:first-child a").all_inner_texts()
    assert sorted(names) == sorted(["set 5"] + [f"set {i}" for i in range(50, 55)])
    page.fill("#dataset-search", "no such set")
    with page.expect_navigation():
        page.click("nav.filters button[type=submit]")
    assert "No dataset has “no such set” in its name." in page.inner_text("section.empty")
    assert page.locator("#samples").count() == 0  # a search with no hit is not an empty team
    shoot(page, "datasets-search-desktop")
