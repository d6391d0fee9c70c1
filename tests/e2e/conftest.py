"""The browser suite's fixtures: Debian's Chromium driven by Playwright against the live server, a person signed
in through the login page, and screenshots saved under test-artifacts/screenshots/; the README's tour shows the
ones a test names in `shoot.tour`, which are also written, viewport-sized, to docs/screenshots/."""
import shutil
import sys
from pathlib import Path

import pytest
from browser import chromium_path, no_browser, playwright_sync_api
from browser_steps import signed_in_page

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
TOUR = ROOT / "docs" / "screenshots"  # committed: README.md shows them
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
                 "--no-first-run", "--disable-component-update", "--disable-sync"]
PASSWORD = "pw-for-tests-1"

sys.path.insert(0, str(ROOT / "tests" / "webapp"))  # jobs_helpers: tiny catalog entries, waiting on a worker


@pytest.fixture
def browser(monkeypatch):
    sync_api = playwright_sync_api()
    executable = chromium_path()
    if executable is None:
        no_browser("no Chromium on PATH (apt-get install chromium)")
    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls are still plain sync code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        except sync_api.Error as error:
            no_browser(f"Chromium at {executable} did not start: {error}")
        yield launched
        launched.close()


@pytest.fixture
def signed_in(browser, live_server, make_member):
    """signed_in(username, team) -> a page of a new member of `team`, signed in through the login form."""
    def sign_in(username: str, team: str):
        make_member(username, team, password=PASSWORD)
        return signed_in_page(browser, live_server.url, username, PASSWORD)

    return sign_in


@pytest.fixture
def shoot(request):
    """shoot(page, "upload") saves a full-page screenshot as <test name>-<nn>-upload.png. A test that sets
    `shoot.tour = {"upload": "upload"}` also gets that view, only what the window shows (a small PNG), as
    docs/screenshots/upload.png for the README's tour."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    prefix = request.node.name.removeprefix("test_")
    count = iter(range(1, 100))

    def save(page, what: str) -> Path:
        path = SCREENSHOTS / f"{prefix}-{next(count):02d}-{what}.png"
        page.screenshot(path=str(path), full_page=True)
        if what in save.tour:  # the top of the page, as a person arriving on it sees it
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(TOUR / f"{save.tour[what]}.png"))
        return path

    save.tour = {}
    return save


@pytest.fixture
def demo_models(celery_worker, demo_lm_build, transactional_db):
    """The built-in demo catalog entries, inspected by the worker as on a fresh install: {source: entry}.
    The session's demo LM build is put where the worker looks for it, so nothing is built twice."""
    from trainer import demo_models as recipe
    from trainer.models import model_cache_dir
    from webapp.catalog.demo import register_demo_models
    from webapp.catalog.inspection import request_inspection
    from webapp.catalog.models import BaseModel

    from jobs_helpers import wait_for

    cached = model_cache_dir() / f"tiny-lm-v{recipe.RECIPE_VERSION}"
    if not (cached / "config.json").is_file():
        shutil.copytree(demo_lm_build[0], cached, dirs_exist_ok=True)
    register_demo_models(BaseModel)
    entries = BaseModel.objects.filter(is_demo=True)
    for entry in entries:
        request_inspection(entry)

    def inspected():
        states = {entry.source: entry for entry in BaseModel.objects.filter(is_demo=True)}
        return states if all(e.status != BaseModel.Status.INSPECTING for e in states.values()) else None
    found = wait_for(inspected, timeout_s=120, what="the demo models' inspection")
    assert all(e.status == BaseModel.Status.READY for e in found.values()), {s: e.error for s, e in found.items()}
    return found


WIDTHS = {"desktop": 1400, "phone": 390}


@pytest.fixture
def at_width():
    """at_width(page, "phone") sets the viewport to 390 px ("desktop": 1400 px), reloads, and asserts that the page
    does not scroll sideways."""
    def resize(page, which: str):
        page.set_viewport_size({"width": WIDTHS[which], "height": 900})
        page.reload()
        scroll = page.evaluate("document.documentElement.scrollWidth")
        assert scroll <= WIDTHS[which], f"{page.url} is {scroll} px wide at {WIDTHS[which]} px: it scrolls sideways"
        return page

    return resize
