"""The browser tests (and any test missing a capability: root to mount, a database server) skip on a machine
without it, but fail in CI, which .ci/run declares."""
import sys
from pathlib import Path

import pytest
from browser import no_browser, playwright_sync_api

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def without_playwright(monkeypatch):
    # A None entry in sys.modules makes `import playwright` raise ImportError, as on a machine without the package.
    monkeypatch.setitem(sys.modules, "playwright", None)


def test_a_missing_playwright_package_fails_the_browser_tests_in_ci(without_playwright, monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="must run in CI: the playwright package is not installed"):
        playwright_sync_api()


def test_a_missing_playwright_package_skips_the_browser_tests_elsewhere(without_playwright, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="the playwright package is not installed"):
        playwright_sync_api()


def test_a_missing_chromium_fails_in_ci_and_skips_elsewhere(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no Chromium"):
        no_browser("no Chromium on PATH")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no Chromium"):
        no_browser("no Chromium on PATH")


def test_the_ci_script_declares_ci_before_it_runs_the_test_command():
    script = (ROOT / ".ci" / "run").read_text().splitlines()
    assert script[-1] == "./test.sh"
    assert "export CI=true" in script[:-1]


def test_any_missing_capability_fails_in_ci_and_elsewhere_is_skipped_with_the_reason_printed(monkeypatch, capsys):
    from capability import missing

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="must run in CI: no root here"):
        missing("no root here")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no root here"):
        missing("no root here")
    assert "skipped: no root here" in capsys.readouterr().err
