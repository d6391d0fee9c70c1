"""The dataset validation task: results only for the current revision, failures as messages (never tracebacks),
storages without local paths, and the real worker on queue `default`."""
import os
import subprocess
import sys

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, default_storage

from webapp.datasets.models import Dataset
from workers import dataset_tasks
from workers.dataset_tasks import local_copy, validate_dataset

ROWS = b'{"text": "one"}\n{"text": "two"}\n'


def make_dataset(content: bytes = ROWS, suffix: str = ".jsonl", **fields) -> Dataset:
    from webapp.teams.models import Team

    team, _ = Team.objects.get_or_create(name="Team W", slug="team-w")
    name = default_storage.save(f"datasets/task-test{suffix}", ContentFile(content))
    return Dataset.objects.create(team=team, name="d", original_filename=f"d{suffix}", file=name,
                                  size_bytes=len(content), revision=1, **fields)


@pytest.mark.django_db(transaction=True)
def test_the_real_worker_validates_a_dataset_on_the_default_queue(celery_worker):
    dataset = make_dataset()
    outcome = validate_dataset.apply_async((dataset.pk, 1), queue="default").get(timeout=300)
    dataset.refresh_from_db()
    assert outcome == "ready" and (dataset.status, dataset.format, dataset.rows) == ("ready", "text", 2)
    assert dataset.validated_at is not None and dataset.report["usable"] is True


@pytest.mark.django_db
def test_a_superseded_revision_writes_nothing():
    dataset = make_dataset()
    Dataset.objects.filter(pk=dataset.pk).update(revision=2)
    assert validate_dataset.run(dataset.pk, 1) == "superseded"
    assert Dataset.objects.get(pk=dataset.pk).status == "validating"
    assert not Dataset.record_report(dataset.pk, 1, {"usable": True})
    Dataset.record_progress(dataset.pk, 1, 0.5)
    assert Dataset.objects.get(pk=dataset.pk).progress == 0.0


@pytest.mark.django_db
def test_an_unexpected_error_becomes_a_message_not_a_traceback(monkeypatch):
    dataset = make_dataset()

    def explode(*args, **kwargs):
        raise KeyError("text")

    monkeypatch.setattr("trainer.data.validate.validate_file", explode)
    assert validate_dataset.run(dataset.pk, 1) == "failed"
    dataset.refresh_from_db()
    assert dataset.status == "invalid"
    assert dataset.error == ("Validation stopped unexpectedly (KeyError). Try again; if it keeps failing, tell an "
                             "administrator.")


@pytest.mark.django_db
def test_a_base_model_whose_tokenizer_cannot_load_falls_back_to_the_estimate_with_a_warning(tmp_path):
    from webapp.catalog.models import BaseModel

    missing = BaseModel.objects.create(name="Gone", source=str(tmp_path / "no-such-model"), status="ready")
    dataset = make_dataset(analysis_model=missing)
    assert validate_dataset.run(dataset.pk, 1) == "ready"
    report = Dataset.objects.get(pk=dataset.pk).report
    assert report["token_stats"]["estimated"] is True and report["tokenizer"] is None
    assert report["warnings"][0].startswith("could not load the tokenizer of Gone")


@pytest.mark.django_db
def test_the_preview_shows_rows_in_the_chosen_base_models_own_chat_template(tmp_path):
    import itertools
    import json

    import tiny_models
    from webapp.catalog.models import BaseModel

    tiny_models.save_chat_model("gemma", tmp_path / "gemma")
    gemma = BaseModel.objects.create(name="Gemma-style", source=str(tmp_path / "gemma"), status="ready")
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."}]
    rows = [chat, [chat[1], chat[1], chat[2]]]  # the second repeats the user turn: roles do not alternate
    dataset = make_dataset("".join(json.dumps({"messages": m}) + "\n" for m in rows).encode(),
                           analysis_model=gemma)
    assert validate_dataset.run(dataset.pk, 1) == "ready"
    report = Dataset.objects.get(pk=dataset.pk).report
    assert report["tokenizer"] == str(tmp_path / "gemma")
    segments = report["preview"][0]["segments"]
    # One segment per token: compare the runs of consecutive tokens that count (or not) toward the loss.
    runs = [("".join(s["text"] for s in run), loss) for loss, run in itertools.groupby(segments, lambda s: s["loss"])]
    assert runs == [
        ("<s><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n", False),
        ("Hello.<end_of_turn>\n", True)]
    assert report["problems"][0]["row"] == 2 and report["problems"][0]["field"] == "messages"
    assert "roles must alternate" in report["problems"][0]["message"]


@pytest.mark.django_db
def test_progress_is_recorded_while_the_file_is_read(monkeypatch):
    monkeypatch.setattr("trainer.data.validate.PROGRESS_EVERY_ROWS", 100)
    dataset = make_dataset(b'{"text": "row"}\n' * 1000)
    seen = []
    monkeypatch.setattr(Dataset, "record_progress", classmethod(lambda cls, pk, rev, f: seen.append(f)))
    validate_dataset.run(dataset.pk, 1)
    assert len(seen) == 10 and all(0 < f <= 1 for f in seen) and seen == sorted(seen)


class RemoteStorage(Storage):
    """Like S3: files are there, but not as paths on this machine (Storage.path raises NotImplementedError)."""

    def __init__(self):
        self.files = {}

    def _save(self, name, content):
        self.files[name] = content.read()
        return name

    def _open(self, name, mode="rb"):
        return ContentFile(self.files[name], name=name)

    def exists(self, name):
        return name in self.files


def test_a_storage_without_local_paths_is_read_through_a_streamed_temporary_copy(monkeypatch):
    remote = RemoteStorage()
    name = remote.save("datasets/remote.csv.gz", ContentFile(b"abc"))
    monkeypatch.setattr(dataset_tasks, "default_storage", remote)
    with local_copy(name) as path:
        assert path.endswith(".csv.gz") and open(path, "rb").read() == b"abc"
    assert not os.path.exists(path)


def test_long_preview_rows_are_clipped_for_the_report():
    row = {"row": 1, "segments": [{"text": "p" * 3000, "loss": False}, {"text": "c" * 3000, "loss": True}]}
    clipped = dataset_tasks._clip(row)
    assert sum(len(s["text"]) for s in clipped["segments"]) == dataset_tasks.PREVIEW_CHARS
    assert clipped["segments"][1]["loss"] is True


def test_a_tokenizer_json_is_loaded_without_importing_torch():
    code = ("import sys; from trainer.models import resolve_model_path; "
            "from workers.dataset_tasks import tokenizer_without_torch; "
            "t = tokenizer_without_torch(resolve_model_path('demo/minilm-l6')); "
            "print(t('hello world')['input_ids'], 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.stdout.split("]")[-1].strip() == "False"
    assert result.stdout.startswith("[101, 7592, 2088, 102]")  # [CLS] hello world [SEP], as AutoTokenizer gives
