"""Helpers the dataset tests share (no tests here): upload through the real view, wait for the real worker."""
import time
import uuid

from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from webapp.datasets.models import Dataset


def upload(client, file_name: str, content: bytes, *, eval_file: tuple[str, bytes] | None = None, name: str = "",
           json: bool = False):
    """POST a file (and an optional eval file) to the upload view, as the page's form does."""
    data = {"name": name, "file": SimpleUploadedFile(file_name, content)}
    if eval_file:
        data["eval_file"] = SimpleUploadedFile(*eval_file)
    headers = {"HTTP_ACCEPT": "application/json"} if json else {}
    return client.post(reverse("datasets:upload"), data, **headers)


def raw_upload(client, file_name: str, content: bytes):
    """POST a multipart body written by hand, so the file name reaches the server exactly as given."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return client.post(reverse("datasets:upload"), body, content_type=f"multipart/form-data; boundary={boundary}")


def wait_validated(pk: int, timeout_s: float = 300) -> Dataset:
    """The dataset once the worker has finished validating it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        dataset = Dataset.objects.get(pk=pk)
        if dataset.status != Dataset.Status.VALIDATING:
            return dataset
        time.sleep(0.2)
    raise AssertionError(f"dataset {pk} still validating after {timeout_s} s")


def upload_and_validate(client, file_name: str, content: bytes, **kwargs) -> Dataset:
    response = upload(client, file_name, content, **kwargs)
    assert response.status_code == 302, response.content[:2000]
    return wait_validated(Dataset.objects.latest("pk").pk)


def jsonl(rows) -> bytes:
    import json

    return "".join(json.dumps(row) + "\n" for row in rows).encode()
