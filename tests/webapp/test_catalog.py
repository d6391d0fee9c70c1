"""The base-model catalog: demo entries, list and detail pages, and admin additions inspected by a real worker."""
import time

import pytest
from django.urls import reverse

from webapp.catalog.demo import register_demo_models
from webapp.catalog.models import BaseModel

import tiny_models

LLAMA_INFO = {"architecture": "LlamaForCausalLM", "model_type": "llama", "total_params": 123456, "dtype": "float32",
              "size_bytes": 493824, "has_chat_template": True, "num_layers": 2, "hidden_size": 32, "vocab_size": 263,
              "linear_layers": [{"name": "model.layers.0.self_attn.q_proj", "in_features": 32, "out_features": 32,
                                 "head": False},
                                {"name": "lm_head", "in_features": 32, "out_features": 263, "head": True}]}


def wait_for(predicate, timeout_s: float = 90, every_s: float = 0.3):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every_s)
    return False


@pytest.mark.django_db
def test_demo_models_are_registered_once_and_listed_with_a_demo_badge(member_client):
    register_demo_models(BaseModel)
    register_demo_models(BaseModel)
    assert BaseModel.objects.filter(source__in=["demo/minilm-l6", "demo/tiny-lm"], is_demo=True).count() == 2
    page = member_client.get(reverse("models:list")).content.decode()
    assert ">MiniLM-L6<" in page and ">Tiny LM<" in page
    assert page.count('class="badge demo"') == 2


@pytest.mark.django_db
def test_detail_page_shows_architecture_and_linear_layer_shapes(member_client):
    entry = BaseModel.objects.create(name="Tiny llama", source="/models/tiny", status="ready", info=LLAMA_INFO,
                                     architecture="LlamaForCausalLM", model_type="llama", task_types=["causal-lm"])
    page = member_client.get(reverse("models:detail", args=[entry.pk])).content.decode()
    assert "LlamaForCausalLM" in page
    assert "model.layers.0.self_attn.q_proj" in page and ">263<" in page
    assert "123.5 k" in page


@pytest.mark.django_db
def test_failed_entry_shows_its_reason(member_client):
    entry = BaseModel.objects.create(name="Broken", source="org/missing", status="failed",
                                     error="model org/missing is not in the Hugging Face cache")
    assert "is not in the Hugging Face cache" in member_client.get(reverse("models:list")).content.decode()
    assert "is not in the Hugging Face cache" in member_client.get(
        reverse("models:detail", args=[entry.pk])).content.decode()


@pytest.mark.django_db
def test_catalog_pages_need_a_signed_in_user(client):
    entry = BaseModel.objects.create(name="x", source="org/x")
    for url in (reverse("models:list"), reverse("models:detail", args=[entry.pk])):
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith(reverse("login"))


@pytest.mark.django_db
def test_admin_refuses_a_source_that_is_neither_a_hub_id_nor_an_absolute_path(admin_client):
    response = admin_client.post(reverse("admin:catalog_basemodel_add"), {"name": "bad", "source": "not a model"})
    assert response.status_code == 200
    assert "Give a Hugging Face id like" in response.content.decode()
    assert not BaseModel.objects.filter(name="bad").exists()


@pytest.mark.django_db(transaction=True)
def test_admin_addition_by_local_path_is_inspected_by_a_worker(admin_client, celery_worker, tmp_path):
    folder = tiny_models.save_tiny("llama", tmp_path / "tiny-llama")
    response = admin_client.post(reverse("admin:catalog_basemodel_add"), {"name": "Tiny llama", "source": str(folder)})
    assert response.status_code == 302
    entry = BaseModel.objects.get(source=str(folder))
    assert wait_for(lambda: BaseModel.objects.get(pk=entry.pk).status != "inspecting"), celery_worker.log()[-3000:]
    entry.refresh_from_db()
    assert entry.status == "ready", entry.error
    assert entry.architecture == "LlamaForCausalLM" and "causal-lm" in entry.task_types
    names = {layer["name"] for layer in entry.info["linear_layers"]}
    assert "model.layers.0.self_attn.q_proj" in names


@pytest.mark.django_db(transaction=True)
def test_admin_addition_that_cannot_be_inspected_fails_with_the_reason(admin_client, celery_worker, tmp_path):
    missing = tmp_path / "no-model-here"
    missing.mkdir()
    admin_client.post(reverse("admin:catalog_basemodel_add"), {"name": "Empty", "source": str(missing)})
    entry = BaseModel.objects.get(source=str(missing))
    assert wait_for(lambda: BaseModel.objects.get(pk=entry.pk).status != "inspecting"), celery_worker.log()[-3000:]
    entry.refresh_from_db()
    assert entry.status == "failed"
    assert "config.json" in entry.error


@pytest.mark.django_db
def test_register_demo_models_command_sends_unfinished_demo_entries_to_inspection(
        monkeypatch, django_capture_on_commit_callbacks):
    from io import StringIO

    from django.core.management import call_command

    sent = []
    monkeypatch.setattr("webapp.catalog.inspection._send", sent.append)
    BaseModel.objects.filter(source="demo/minilm-l6").delete()
    BaseModel.objects.filter(source="demo/tiny-lm").update(status="ready")
    out = StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("register_demo_models", stdout=out)
    minilm = BaseModel.objects.get(source="demo/minilm-l6")
    assert sent == [minilm.pk] and minilm.is_demo and minilm.status == "inspecting"
    assert "demo/minilm-l6: inspecting" in out.getvalue() and "demo/tiny-lm: ready" in out.getvalue()
