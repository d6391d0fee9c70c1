"""Fixtures the web app's tests share: a tiny Llama in the catalog, saved once per test module."""
import pytest

from jobs_helpers import tiny_entry


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """The folder a test module's tiny models are saved in (each model once per module)."""
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture
def llama(tiny_dirs, db):
    """A ready catalog entry for the tiny Llama."""
    return tiny_entry("llama", tiny_dirs / "llama")
