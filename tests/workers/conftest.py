"""Fixtures for the worker tests that run their own workers beside the session's."""
import pytest


@pytest.fixture
def session_worker_paused(celery_worker):
    """The session's worker serves `default,train,infer` from the local disk: stopped for this test, or it would
    take jobs meant for the test's own workers; started again afterwards for the tests that follow."""
    celery_worker.stop()
    yield
    celery_worker.start()
