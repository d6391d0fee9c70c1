"""The datasets pages in a real browser (Chromium through Playwright) against a live server and a real worker:
drag-and-drop, the upload progress bar, the detail page following its own validation, the size check."""
import pytest
from browser import chromium_path, no_browser, playwright_sync_api
from django.conf import settings as django_settings

from test_datasets_support import jsonl
from webapp.datasets.models import Dataset

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
ROWS = jsonl({"prompt": f"Question {i}: " + "word " * (i % 50), "completion": f"Answer {i}"} for i in range(20_000))


@pytest.fixture
def page(live_server, member_client, monkeypatch):
    sync_api = playwright_sync_api()
    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls are still plain sync code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        except Exception as error:  # noqa: BLE001 - no browser on this machine
            no_browser(f"no Chromium to drive: {error}")
        context = browser.new_context(base_url=live_server.url)
        context.add_cookies([{"name": django_settings.SESSION_COOKIE_NAME, "url": live_server.url,
                              "value": member_client.cookies[django_settings.SESSION_COOKIE_NAME].value}])
        yield context.new_page()
        browser.close()


def drop_file(page, zone_selector: str, name: str, text: str) -> None:
    """Drop a file onto a dropzone the way a browser does: a drop event carrying a DataTransfer."""
    page.evaluate("""([selector, name, text]) => {
        const transfer = new DataTransfer();
        transfer.items.add(new File([text], name));
        document.querySelector(selector).dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true}));
    }""", [zone_selector, name, text])


def test_a_dropped_file_uploads_with_progress_and_the_page_follows_its_validation(page, celery_worker):
    page.goto("/datasets/upload/")
    drop_file(page, "[data-dropzone=id_file]", "dropped.jsonl", ROWS.decode())
    assert page.inner_text("[data-dropzone=id_file] .dropzone-name") == "dropped.jsonl"
    widths = []  # every width the progress bar takes, reported to the test as it changes
    page.expose_function("reportWidth", lambda width: widths.append(width))
    page.evaluate("""() => {
        const bar = document.querySelector(".upload-progress .progress > span");
        new MutationObserver(() => window.reportWidth(bar.style.width)).observe(bar, {attributes: true});
    }""")
    with page.expect_navigation(url="**/datasets/*/"):
        page.click("#upload-form button[type=submit]")
    assert widths and widths[-1] == "100%"
    dataset = Dataset.objects.get()
    assert dataset.original_filename == "dropped.jsonl" and dataset.size_bytes == len(ROWS)
    page.wait_for_selector("#dataset-status.ready", timeout=300_000)  # no reload by the test: the page did it
    assert "prompt_completion" in page.inner_text("main")
    assert page.locator("svg.histogram rect.bar").count() == 20


def test_a_file_over_the_limit_is_refused_in_the_page_before_it_is_sent(page, settings):
    settings.MAX_UPLOAD_MB = 1
    page.goto("/datasets/upload/")
    drop_file(page, "[data-dropzone=id_file]", "big.jsonl", "x" * (2 * 2**20))
    page.click("#upload-form button[type=submit]")
    error = page.locator(".upload-error")
    error.wait_for()
    assert "big.jsonl is 2.0 MB: larger than the upload limit of 1.0 MB" in error.inner_text()
    assert not Dataset.objects.exists()


def test_a_refused_upload_shows_the_servers_message(page):
    page.goto("/datasets/upload/")
    drop_file(page, "[data-dropzone=id_file]", "table.xlsx", "PK not a dataset")
    page.click("#upload-form button[type=submit]")
    page.locator(".upload-error").wait_for()
    assert "use JSONL, JSON or CSV" in page.inner_text(".upload-error")
