"""Downloads of a finished job: adapter zip (PEFT layout + model card), merged model zip, metrics.json — each
re-opened and checked, streamed in bounded chunks, and visible only to the job's team."""
import io
import json
import os
import re
import zipfile
from pathlib import Path

import pytest
import torch
from django.urls import reverse

import finished_jobs


def download(client, job, kind):
    return client.get(reverse("results:download", args=[job.pk, kind]))


def unzip(response, folder: Path) -> tuple[zipfile.ZipFile, Path]:
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert archive.testzip() is None
    archive.extractall(folder)
    (top,) = {name.split("/")[0] for name in archive.namelist()}
    return archive, folder / top


def test_the_adapter_zip_holds_the_peft_files_and_a_model_card(member_client, team_a, merged_llama_run, tmp_path):
    job = finished_jobs.make_job(team_a, merged_llama_run, name="Color namer")
    response = download(member_client, job, "adapter")
    assert re.fullmatch(rf'attachment; filename="loraworks-{job.pk}-color-namer-adapter.zip"',
                        response["Content-Disposition"])
    archive, folder = unzip(response, tmp_path)
    assert sorted(Path(n).name for n in archive.namelist()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors"]
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (folder / name).read_bytes() == (merged_llama_run / "out" / "adapter" / name).read_bytes()
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: peft\nbase_model: " + str(merged_llama_run / "base"))
    assert "# Color namer: LoRA adapter" in card and "Color namer data" in card
    assert "| Perplexity | 244.7 | 22.2 |" in card and "| LoRA rank | 4 |" in card
    assert f"| {job.metrics['trainable_params']:,} | {job.metrics['total_params']:,} |" in card
    assert f'PeftModel.from_pretrained(base, "{folder.name}")' in card


def test_the_adapter_zip_loads_with_peft_and_gives_the_same_logits_as_our_engine(
        member_client, team_a, merged_llama_run, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from trainer.inference import load_for_inference

    job = finished_jobs.make_job(team_a, merged_llama_run)
    _, folder = unzip(download(member_client, job, "adapter"), tmp_path)
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(merged_llama_run / "base"), folder).eval()
    ours, tokenizer = load_for_inference(str(merged_llama_run / "base"), adapter_dir=folder)
    ids = tokenizer("Name a color", return_tensors="pt")["input_ids"]
    base_logits = AutoModelForCausalLM.from_pretrained(merged_llama_run / "base")(ids).logits
    with torch.no_grad():
        theirs, mine = peft_model(ids).logits, ours(ids).logits
    torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(mine, base_logits, atol=1e-3)  # the adapter does change the model


def test_a_classification_adapter_zip_loads_with_peft_using_its_label_mapping(
        member_client, team_a, bert_run, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from trainer.inference import load_for_inference

    job = finished_jobs.make_job(team_a, bert_run)
    archive, folder = unzip(download(member_client, job, "adapter"), tmp_path)
    assert "label_mapping.json" in {Path(n).name for n in archive.namelist()}
    card = (folder / "README.md").read_text()
    assert "| Accuracy | 25.0 % | 75.0 % |" in card and "label_mapping.json" in card
    id2label = {int(i): v for i, v in json.loads((folder / "label_mapping.json").read_text())["id2label"].items()}
    base = AutoModelForSequenceClassification.from_pretrained(
        bert_run / "base", num_labels=len(id2label), id2label=id2label)
    peft_model = PeftModel.from_pretrained(base, folder).eval()
    ours, tokenizer = load_for_inference(str(bert_run / "base"), adapter_dir=folder)
    batch = tokenizer(["my invoice is wrong", "the app crashes"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch).logits, peft_model(**batch).logits, rtol=1e-5, atol=1e-5)


def test_the_merged_zip_is_a_plain_transformers_model_equal_to_the_adapter(member_client, team_a, merged_llama_run,
                                                                           tmp_path, monkeypatch, capsys):
    from transformers import AutoModelForCausalLM

    from trainer.inference import load_for_inference

    job = finished_jobs.make_job(team_a, merged_llama_run, merged=True)
    archive, folder = unzip(download(member_client, job, "merged"), tmp_path)
    assert "config.json" in {Path(n).name for n in archive.namelist()}
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n") and "merged model" in card
    assert "| Perplexity | 244.7 | 22.2 |" in card and "PeftModel" not in card
    snippet = card.split("```python\n")[1].split("```")[0]
    monkeypatch.chdir(tmp_path)  # the card's paths are relative to where the zip was unpacked
    exec(compile(snippet, "README.md", "exec"), {})  # the card's own code loads the model and generates
    assert capsys.readouterr().out.strip()
    merged = AutoModelForCausalLM.from_pretrained(folder).eval()
    ours, tokenizer = load_for_inference(str(merged_llama_run / "base"), adapter_dir=merged_llama_run / "out" / "adapter")
    ids = tokenizer("Say blue", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, ours(ids).logits, rtol=1e-4, atol=1e-4)


def test_metrics_json_is_the_stored_file(member_client, team_a, merged_llama_run):
    job = finished_jobs.make_job(team_a, merged_llama_run)
    response = download(member_client, job, "metrics")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert f'filename="loraworks-{job.pk}-tickets-router-metrics.json"' in response["Content-Disposition"]
    assert json.loads(b"".join(response.streaming_content)) == finished_jobs.metrics_of(merged_llama_run)


def test_zips_stream_in_bounded_chunks_whatever_the_file_size(db, tmp_path):
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from webapp.results.zips import CHUNK_BYTES, stream_zip

    payload = os.urandom(5 * CHUNK_BYTES + 123)
    name = default_storage.save(f"jobs/test-zip/{os.getpid()}/weights.safetensors", ContentFile(payload))
    try:
        chunks = list(stream_zip([("x/weights.safetensors", name), ("x/README.md", b"# hi\n" * 100)]))
    finally:
        default_storage.delete(name)
    assert len(chunks) >= 5 and max(map(len, chunks)) <= CHUNK_BYTES + 1024
    archive = zipfile.ZipFile(io.BytesIO(b"".join(chunks)))
    assert archive.read("x/weights.safetensors") == payload and archive.read("x/README.md") == b"# hi\n" * 100
    assert archive.getinfo("x/weights.safetensors").compress_type == zipfile.ZIP_STORED
    assert archive.getinfo("x/README.md").compress_type == zipfile.ZIP_DEFLATED


def test_missing_or_unfinished_downloads_are_not_found(member_client, team_a, merged_llama_run):
    running = finished_jobs.make_job(team_a, merged_llama_run, state="running")
    done = finished_jobs.make_job(team_a, merged_llama_run)  # no merged model
    assert download(member_client, running, "adapter").status_code == 404
    assert download(member_client, done, "merged").status_code == 404
    assert download(member_client, done, "weights").status_code == 404


@pytest.mark.parametrize("kind", ["adapter", "merged", "metrics"])
def test_another_teams_downloads_are_not_found(member_client, make_member, merged_llama_run, kind):
    from webapp.teams.models import Team

    make_member("bob", "Team B")
    theirs = finished_jobs.make_job(Team.objects.get(name="Team B"), merged_llama_run, merged=True)
    assert download(member_client, theirs, kind).status_code == 404


@pytest.mark.parametrize("kind", ["adapter", "merged", "metrics"])
def test_anonymous_downloads_are_sent_to_sign_in(client, make_member, merged_llama_run, kind):
    from webapp.teams.models import Team

    make_member("bob", "Team B")
    job = finished_jobs.make_job(Team.objects.get(name="Team B"), merged_llama_run, merged=True)
    response = download(client, job, kind)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
