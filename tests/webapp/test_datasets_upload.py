"""Uploading datasets: streamed to storage under a generated name, size limit enforced while streaming, safe names."""
import io
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.files.uploadhandler import StopUpload
from django.urls import reverse

from test_datasets_support import raw_upload, upload
from webapp.datasets.models import Dataset
from webapp.datasets.uploads import SizeLimitedUploadHandler

GOOD = b'{"text": "hello there"}\n{"text": "general kenobi"}\n'
STORED_NAME = re.compile(r"^datasets/[0-9a-f]{32}\.jsonl$")


def stored_files() -> set[str]:
    folder = Path(settings.MEDIA_ROOT) / "datasets"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


@pytest.fixture
def upload_tmp(settings, tmp_path):
    """Uploads stream into this folder, so a test can see that nothing is left behind."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(folder)
    return folder


@pytest.mark.django_db
def test_an_upload_is_stored_under_a_generated_name_and_the_file_name_is_only_a_label(member_client, upload_tmp):
    response = upload(member_client, "My Data.jsonl", GOOD, name="Greetings")
    dataset = Dataset.objects.get()
    assert response.status_code == 302 and response.url == reverse("datasets:detail", args=[dataset.pk])
    assert STORED_NAME.match(dataset.file.name)
    assert dataset.original_filename == "My Data.jsonl" and dataset.name == "Greetings"
    assert dataset.size_bytes == len(GOOD) and dataset.status == "validating"
    assert dataset.team.name == "Team A" and dataset.created_by == member_client.user
    with default_storage.open(dataset.file.name, "rb") as stored:
        assert stored.read() == GOOD
    assert list(upload_tmp.iterdir()) == []


@pytest.mark.django_db
def test_the_upload_answers_json_to_the_progress_bar_script(member_client, upload_tmp):
    response = upload(member_client, "d.jsonl.gz", GOOD, eval_file=("eval.csv", b"text\nhi\n"), json=True)
    dataset = Dataset.objects.get()
    assert response.json() == {"ok": True, "url": reverse("datasets:detail", args=[dataset.pk]), "id": dataset.pk}
    assert dataset.file.name.endswith(".jsonl.gz") and dataset.eval_file.name.endswith(".csv")
    assert dataset.name == "d.jsonl.gz" and dataset.eval_original_filename == "eval.csv"


@pytest.mark.django_db
def test_a_file_over_the_limit_is_stopped_while_streaming_and_nothing_is_kept(member_client, upload_tmp, settings):
    settings.MAX_UPLOAD_MB = 1
    before = stored_files()
    # 2.1 MB: within what two files could add up to, so the handler, not the Content-Length check, stops it
    response = upload(member_client, "big.jsonl", b'{"text": "x"}\n' * 150_000, json=True)
    assert response.status_code == 413
    assert "larger than the upload limit of 1 MB" in response.json()["message"]
    assert "big.jsonl" in response.json()["message"]
    assert not Dataset.objects.exists()
    assert stored_files() == before and list(upload_tmp.iterdir()) == []


@pytest.mark.django_db
def test_a_body_whose_length_is_over_the_limit_is_refused_before_it_is_read(member_client, upload_tmp, settings):
    settings.MAX_UPLOAD_MB = 1
    before = stored_files()
    # A body that claims 50 MB but carries a small valid upload: were it read, the upload would succeed.
    response = member_client.post(reverse("datasets:upload"), {"file": SimpleUploadedFile("big.jsonl", GOOD)},
                                  CONTENT_LENGTH=str(50 * 2**20))
    assert response.status_code == 413
    assert "The upload (50.0 MB) is larger than the upload limit of 1 MB" in response.content.decode()
    assert not Dataset.objects.exists()
    assert stored_files() == before and list(upload_tmp.iterdir()) == []


@pytest.mark.django_db
def test_an_eval_file_over_the_limit_discards_the_training_file_as_well(member_client, upload_tmp, settings):
    settings.MAX_UPLOAD_MB = 1
    before = stored_files()
    response = upload(member_client, "train.jsonl", GOOD, eval_file=("eval.jsonl", b"x" * (2 * 2**20)))
    assert response.status_code == 413 and b"eval.jsonl is larger than the upload limit" in response.content
    assert not Dataset.objects.exists()
    assert stored_files() == before and list(upload_tmp.iterdir()) == []


def test_the_handler_stops_at_the_first_chunk_past_the_limit_and_removes_its_temporary_file(settings, tmp_path):
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    handler = SizeLimitedUploadHandler(None, limit_bytes=100_000)
    handler.new_file("file", "big.jsonl", "application/octet-stream", None)
    chunks = io.BytesIO(b"x" * 1_000_000)
    received = 0
    with pytest.raises(StopUpload) as stopped:
        while chunk := chunks.read(65536):
            handler.receive_data_chunk(chunk, received)
            received += len(chunk)
    assert received == 65536  # the second chunk crossed the limit: nothing after it was read
    assert stopped.value.connection_reset and handler.rejected == "big.jsonl"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.django_db
def test_a_file_name_with_dot_dot_slash_is_only_a_label(member_client, upload_tmp):
    response = raw_upload(member_client, "../../../etc/evil.jsonl", GOOD)
    dataset = Dataset.objects.get()
    assert response.status_code == 302 and STORED_NAME.match(dataset.file.name)
    assert dataset.original_filename == "evil.jsonl"
    assert Path(default_storage.path(dataset.file.name)).resolve().is_relative_to(Path(settings.MEDIA_ROOT).resolve())


@pytest.mark.django_db
def test_a_300_character_file_name_is_kept_short_as_a_label(member_client, upload_tmp):
    response = raw_upload(member_client, "a" * 294 + ".jsonl", GOOD)
    dataset = Dataset.objects.get()
    assert response.status_code == 302 and STORED_NAME.match(dataset.file.name)
    assert len(dataset.original_filename) <= 255 and dataset.original_filename.endswith(".jsonl")
    assert len(dataset.name) <= 200


@pytest.mark.django_db
def test_an_empty_file_is_refused_with_a_clear_message(member_client, upload_tmp):
    before = stored_files()
    response = upload(member_client, "empty.jsonl", b"")
    assert response.status_code == 400 and b"The submitted file is empty" in response.content
    assert not Dataset.objects.exists() and stored_files() == before


@pytest.mark.django_db
def test_a_file_of_another_kind_is_refused_before_it_is_stored(member_client, upload_tmp):
    response = upload(member_client, "sheet.xlsx", b"PK\x03\x04 not a dataset", json=True)
    assert response.status_code == 400
    assert "use JSONL, JSON or CSV" in response.json()["errors"]["file"][0]
    assert not Dataset.objects.exists() and list(upload_tmp.iterdir()) == []


@pytest.mark.django_db
def test_the_upload_page_offers_drag_and_drop_and_a_progress_bar(member_client):
    page = member_client.get(reverse("datasets:upload")).content.decode()
    assert "data-dropzone" in page and 'class="progress"' in page and "datasets.js" in page
    assert f'data-limit-bytes="{settings.MAX_UPLOAD_MB * 2**20}"' in page


@pytest.mark.django_db
def test_anonymous_visitors_are_sent_to_sign_in(client):
    for url in (reverse("datasets:list"), reverse("datasets:upload"), reverse("datasets:detail", args=[1])):
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith(reverse("login"))
