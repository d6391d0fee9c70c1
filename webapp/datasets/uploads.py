"""Receiving dataset files: a streaming upload handler that enforces MAX_UPLOAD_MB while the bytes arrive, and
storing an upload under a generated name.

The handler writes each file to a temporary file chunk by chunk (Django hands it 64 KB at a time), so memory stays
flat whatever the size. The moment a file passes the limit it deletes what it had written and stops the upload:
nothing is left on disk and the view never sees the file. A request whose Content-Length already says it is too large
is refused before any of it is read (`declared_too_large`). The user's file name is kept only as a label; the stored
name is `datasets/<uuid4 hex><ext>` with an extension from a fixed list.
"""
from __future__ import annotations

import uuid
from pathlib import PurePosixPath

from django.conf import settings
from django.core.files.storage import default_storage
from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler

EXTENSIONS = (".jsonl", ".ndjson", ".json", ".csv", ".tsv")
ACCEPT = ",".join(EXTENSIONS + tuple(ext + ".gz" for ext in EXTENSIONS))
FILES_PER_UPLOAD = 2  # the training file and the optional evaluation file, each up to the limit
FORM_ALLOWANCE = 2**20  # the name, the column mapping and the multipart part headers around the files


def max_upload_bytes() -> int:
    return settings.MAX_UPLOAD_MB * 2**20


def declared_too_large(request) -> str | None:
    """A message when the request's Content-Length alone proves a file is over the limit (more bytes than two files
    at the limit and the form's fields), else None. Such a request is refused before its body is read, so the client
    gets the answer instead of a connection cut in the middle of sending. A smaller body still meets the per-file
    streaming check."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    if declared <= FILES_PER_UPLOAD * max_upload_bytes() + FORM_ALLOWANCE:
        return None
    return too_large_message(f"The upload ({declared / 2**20:.1f} MB)")


class SizeLimitedUploadHandler(TemporaryFileUploadHandler):
    """Streams files to temporary files; stops the upload as soon as one file passes `limit_bytes`.

    After a stop, `rejected` holds the name of the file that was too large (the view turns it into a message).
    """

    def __init__(self, request=None, limit_bytes: int | None = None):
        super().__init__(request)
        self.limit_bytes = max_upload_bytes() if limit_bytes is None else limit_bytes
        self.rejected: str | None = None
        self.received = 0

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > self.limit_bytes:
            self.rejected = self.file_name
            self.upload_interrupted()  # closes and removes the temporary file
            # connection_reset: do not read (and discard) the rest of a body that may be gigabytes long.
            raise StopUpload(connection_reset=True)
        return super().receive_data_chunk(raw_data, start)


def too_large_message(file_name: str | None) -> str:
    return (f"{file_name or 'The file'} is larger than the upload limit of {settings.MAX_UPLOAD_MB} MB; "
            "the upload was stopped and nothing was kept. Compress it with gzip or split it.")


def storage_extension(file_name: str) -> str | None:
    """The extension to store a file under (".jsonl", ".csv.gz"…), or None when its name is not an accepted kind."""
    suffixes = [s.lower() for s in PurePosixPath(file_name).suffixes]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    if compressed:
        suffixes = suffixes[:-1]
    if not suffixes or suffixes[-1] not in EXTENSIONS:
        return None
    return suffixes[-1] + (".gz" if compressed else "")


def extension_problem(file_name: str) -> str | None:
    if storage_extension(file_name) is None:
        return (f"{file_name!r} is not a dataset file this site reads: use JSONL, JSON or CSV "
                f"({', '.join(EXTENSIONS)}), optionally gzip-compressed (.gz)")
    return None


def label(file_name: str) -> str:
    """The user's file name as a label: no folders (Django already dropped them), at most 255 characters."""
    name = PurePosixPath(file_name.replace("\\", "/")).name or "dataset"
    return name if len(name) <= 255 else name[:120] + "…" + name[-134:]


def store(uploaded) -> str:
    """Save an uploaded (or any Django File) under a generated name; returns the storage name."""
    name = f"datasets/{uuid.uuid4().hex}{storage_extension(uploaded.name) or ''}"
    return default_storage.save(name, uploaded)
