"""The operations page (staff only: workers with their queues and running job, queue lengths, database, Redis,
storage) and the web process's /healthz, against a real worker, the test database and Redis."""
import pytest


@pytest.mark.django_db
def test_healthz_answers_200_when_the_database_and_redis_answer(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": True, "redis": True}


@pytest.mark.django_db
def test_healthz_answers_503_naming_redis_when_it_is_unreachable(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/15"
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": True, "redis": False}


@pytest.mark.django_db
def test_an_anonymous_visitor_is_sent_to_sign_in(client):
    anonymous = client.get("/ops/")
    assert anonymous.status_code == 302 and anonymous.url.startswith("/login/")


@pytest.mark.django_db
def test_a_member_who_is_not_staff_is_refused(member_client):
    assert member_client.get("/ops/").status_code == 403


@pytest.mark.django_db(transaction=True)
def test_staff_see_live_workers_with_their_queues_and_reachable_services(celery_worker, member_client):
    member_client.user.is_staff = True
    member_client.user.save()
    page = member_client.get("/ops/")
    assert page.status_code == 200
    html = page.content.decode()
    assert celery_worker.name in html
    row = html[html.index(celery_worker.name):]
    assert "default, infer, train" in row[:400]
    assert html.count("reachable</span>") == 3 and "unreachable" not in html
    assert "free</p>" in html  # local storage shows its free space
    queues = html[html.index('class="table queues"'):html.index("</table>")]
    assert all(name in queues for name in ("default", "train", "infer")) and "no worker" not in queues
