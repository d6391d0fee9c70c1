"""Copying a job's files between a worker's local folders and artifact storage (Django's default storage).

Names are fixed (`jobs/<id>/...`): an upload replaces what was there. Downloads stream in chunks.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from django.core.files import File
from django.core.files.storage import default_storage

CHUNK = 1024 * 1024


def job_prefix(job_id: int) -> str:
    return f"jobs/{job_id}/"


def put_file(local: Path, name: str) -> str:
    delete_file(name)
    with open(local, "rb") as handle:
        saved = default_storage.save(name, File(handle))
    if saved != name:  # storage refused the exact name: never leave a file where nobody will look for it
        default_storage.delete(saved)
        raise OSError(f"storage saved {name} as {saved}")
    return saved


def put_tree(local_dir: Path, prefix: str) -> list[str]:
    """Upload every file under `local_dir` to `prefix` + its relative path; returns the storage names."""
    return [put_file(path, prefix + path.relative_to(local_dir).as_posix())
            for path in sorted(Path(local_dir).rglob("*")) if path.is_file()]


def get_file(name: str, local: Path) -> Path:
    local.parent.mkdir(parents=True, exist_ok=True)
    with default_storage.open(name, "rb") as source, open(local, "wb") as target:
        shutil.copyfileobj(source, target, CHUNK)
    return local


def delete_tree(prefix: str) -> None:
    """Delete every file under storage folder `prefix` (recursively)."""
    try:
        folders, files = default_storage.listdir(prefix)
    except FileNotFoundError:
        return
    for name in files:
        default_storage.delete(prefix + name)
    for folder in folders:
        delete_tree(f"{prefix}{folder}/")


def delete_file(name: str) -> None:
    if default_storage.exists(name):
        default_storage.delete(name)


def put_bytes(data: bytes, name: str) -> str:
    from django.core.files.base import ContentFile

    delete_file(name)
    return default_storage.save(name, ContentFile(data))


def read_bytes(name: str) -> bytes:
    with default_storage.open(name, "rb") as handle:
        return handle.read()
