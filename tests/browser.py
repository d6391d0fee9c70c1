"""What the browser tests share: finding Chromium and Playwright, skipping without them here but failing in CI.

.ci/run sets CI=true and installs both, so there a missing browser or package is a broken setup, not a skip.
"""
import shutil

from capability import missing


def chromium_path() -> str | None:
    return next(filter(None, (shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome"))),
                None)


def no_browser(reason: str):
    """Without a browser the suite is skipped here, but fails in CI, where it must run."""
    missing(reason)


def playwright_sync_api():
    """playwright.sync_api, or a skip (a failure in CI) naming the package to install."""
    try:
        from playwright import sync_api
    except ImportError:
        no_browser("the playwright package is not installed (pip install -e '.[test]')")
    return sync_api
