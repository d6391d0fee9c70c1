"""API tokens in Chromium: creating one redirects (a reload does not create a second), its secret is shown once,
and revoking asks first (dismissing keeps the token working)."""
import pytest

from webapp.accounts.models import ApiToken

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_reloading_after_creating_a_token_creates_no_second_one_and_revoke_asks_first(signed_in, at_width, shoot):
    page = signed_in("erin", "Script team")
    page.goto("/account/settings/")
    page.fill("#id_name", "nightly")
    with page.expect_navigation():
        page.click("button:has-text('Create token')")
    secret = page.inner_text("#new-token").strip()
    assert secret.startswith("lw_") and ApiToken.objects.filter(name="nightly").count() == 1
    shoot(page, "created")
    page.reload()  # a GET: no "resubmit the form?" and no second token
    assert ApiToken.objects.filter(name="nightly").count() == 1
    assert page.locator("#new-token").count() == 0 and secret not in page.content()

    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.click("button:has-text('Revoke')")
    assert asked and "nightly" in asked[0] and "cannot be undone" in asked[0]
    assert ApiToken.objects.get(name="nightly").revoked_at is None
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.click("button:has-text('Revoke')")
    assert ApiToken.objects.get(name="nightly").revoked_at is not None
    assert "Revoked token nightly" in page.inner_text(".messages")
    for width in ("desktop", "phone"):
        at_width(page, width)
        shoot(page, f"revoked-{width}")
