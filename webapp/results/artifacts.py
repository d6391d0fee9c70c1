"""A finished job's artifacts in storage: listing a folder prefix and copying it to a local folder.

Everything goes through `default_storage` (a local folder today, an object store later), so the web process and
the workers never rely on paths only one host has.
"""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

from django.core.files.storage import default_storage

CHUNK_BYTES = 1024 * 1024


def walk(prefix: str) -> Iterator[tuple[str, str]]:
    """(path relative to `prefix`, storage name) of every file under the folder `prefix`, sorted, recursively."""
    prefix = prefix.rstrip("/") + "/"
    try:
        folders, files = default_storage.listdir(prefix)
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in sorted(files):
        yield name, prefix + name
    for folder in sorted(folders):
        for relative, stored in walk(prefix + folder):
            yield f"{folder}/{relative}", stored


def has_files(prefix: str | None) -> bool:
    return bool(prefix) and next(walk(prefix), None) is not None


def copy_to_folder(prefix: str, destination: Path) -> Path:
    """Copy every file under `prefix` into `destination` (created), streaming chunk by chunk; returns it."""
    destination.mkdir(parents=True, exist_ok=True)
    copied = 0
    for relative, stored in walk(prefix):
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with default_storage.open(stored, "rb") as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out, CHUNK_BYTES)
        copied += 1
    if not copied:
        raise FileNotFoundError(f"no files in storage under {prefix}")
    return destination
