"""A real worker process answers the health task through Redis, reaching the test database."""
import pytest

from workers.health_tasks import health


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_reaches_the_database_and_redis(celery_worker):
    result = health.apply_async(queue="default").get(timeout=30)
    assert result["database"] is True and result["redis"] is True
