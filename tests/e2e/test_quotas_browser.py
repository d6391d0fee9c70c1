"""Quotas and the audit log in Chromium at 1400 px (and 390 px for the team page): a team past its GPU-hours is
refused a new job with the reason on the form, which keeps what was typed; the team page shows the month's use
against the quotas and, to an owner, the audit log with the sign-in through the login form and where it came from."""
import pytest

from jobs_helpers import completion_rows, stored_dataset, tiny_entry
from webapp.jobs.models import Job
from webapp.teams.models import Membership, MonthlyUsage, Team
from webapp.teams.usage import month_of

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_team_over_its_quota_is_refused_with_the_reason_and_its_page_shows_use_and_audit(signed_in, at_width,
                                                                                          shoot, tmp_path):
    page = signed_in("olga", "Quota team")
    team = Team.objects.get(name="Quota team")
    Membership.objects.filter(team=team, user__username="olga").update(role=Membership.Role.OWNER)
    Team.objects.filter(pk=team.pk).update(gpu_hours_per_month=1, max_queued_jobs=4)
    MonthlyUsage.objects.create(team=team, month=month_of(), gpu_seconds=2 * 3600)
    model = tiny_entry("llama", tmp_path / "models")
    stored_dataset(team, completion_rows(), task="causal-lm", name="sums")

    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto("/jobs/new/")
    page.fill("#id_name", "one job too many")
    page.select_option("#id_base_model", value=str(model.pk))
    page.select_option("#id_priority", "high")
    page.wait_for_function("document.querySelector('#estimate').innerText.includes('%')")
    with page.expect_navigation() as navigation:
        page.click("#job-form button[type=submit]")
    assert navigation.value.status == 409
    reason = page.inner_text("#quota-refused")
    assert "The team Quota team has used 2.00 of its 1 GPU-hours" in reason, reason
    assert page.input_value("#id_name") == "one job too many" and page.input_value("#id_priority") == "high"
    assert not Job.objects.exists()
    shoot(page, "refused")

    page.goto(f"/teams/{team.pk}/")
    cells = [page.inner_text(f"[data-quota='{n}']") for n in (1, 2, 3, 4)]
    assert cells[2].split("\t") == ["GPU-hours this month", "2.0", "1.0"], cells
    assert cells[1].split("\t") == ["Queued jobs", "0", "4"], cells
    sign_in = page.locator("#audit-log tr[data-action=sign_in]")
    assert sign_in.count() == 1
    assert sign_in.inner_text().split("\t")[1:] == ["olga", "Signed in", "", "127.0.0.1 (web)"]
    for width in ("desktop", "phone"):
        at_width(page, width)
        shoot(page, f"team-{width}")
