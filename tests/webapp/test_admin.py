"""Django admin covers every model of our apps: each is registered, and a superuser can open its list and (where
the admin allows adding) its add page; jobs and their events are read-only there."""
import pytest
from django.apps import apps
from django.contrib import admin
from django.urls import reverse
from jobs_helpers import classification_rows, make_job, stored_dataset

# Created only through the form or the API, and moved only through webapp.jobs.states: never added in the admin.
# Audit rows and GPU accounting are written by what they record, never by hand.
READ_ONLY = {"jobs.job", "jobs.jobevent", "audit.auditevent", "teams.monthlyusage"}


def our_models():
    return [model for model in apps.get_models() if model.__module__.startswith("webapp.")]


def admin_url(model, page: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{page}", args=args)


@pytest.fixture
def a_job(team_a):
    from webapp.catalog.models import BaseModel

    base = BaseModel.objects.create(name="tiny bert", source="/models/tiny-bert", status="ready")
    return make_job(team_a, base, stored_dataset(team_a, classification_rows(8), task="classification"),
                    name="ticket triage")


def test_every_model_of_our_apps_is_registered_in_the_admin():
    models = our_models()
    assert {m._meta.label_lower for m in models} >= {"teams.team", "datasets.dataset", *READ_ONLY}
    assert [m._meta.label for m in models if m not in admin.site._registry] == []


@pytest.mark.django_db
def test_a_superuser_opens_every_list_and_every_add_page_the_admin_offers(admin_client, a_job):
    read_only = set()
    for model in our_models():
        assert admin_client.get(admin_url(model, "changelist")).status_code == 200, model._meta.label
        add_page = admin_client.get(admin_url(model, "add"))
        if model._meta.label_lower in READ_ONLY:
            assert add_page.status_code == 403, model._meta.label
            read_only.add(model._meta.label_lower)
        else:
            assert add_page.status_code == 200, model._meta.label
            assert b'type="submit"' in add_page.content, model._meta.label
    assert read_only == READ_ONLY


@pytest.mark.django_db
def test_the_job_list_shows_every_team_s_jobs_and_a_job_page_its_history(admin_client, a_job, team_b):
    from webapp.jobs.models import Job

    Job.objects.create(team=team_b, name="team b job", base_model=a_job.base_model, dataset=a_job.dataset,
                               task=a_job.task)
    listing = admin_client.get(admin_url(Job, "changelist")).content.decode()
    assert "ticket triage" in listing and "team b job" in listing
    page = admin_client.get(admin_url(Job, "change", a_job.pk)).content.decode()
    assert page.count("created by a test") == 1  # the creation event, in the read-only history inline
    assert 'name="_save"' not in page


@pytest.mark.django_db
def test_the_admin_refuses_to_edit_or_delete_a_job(admin_client, a_job):
    from webapp.jobs.models import Job

    edit = admin_client.post(admin_url(Job, "change", a_job.pk), {"name": "renamed", "state": "succeeded"})
    assert edit.status_code == 403
    assert admin_client.post(admin_url(Job, "delete", a_job.pk), {"post": "yes"}).status_code == 403
    a_job.refresh_from_db()
    assert (a_job.name, a_job.state) == ("ticket triage", "queued")
