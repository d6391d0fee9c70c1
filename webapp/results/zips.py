"""Zip archives written on the fly from storage, for streamed downloads.

`stream_zip` is a generator of byte chunks: `zipfile` writes into a buffer that is emptied after every chunk of
input, so memory stays at about one chunk whatever the size of the files (a merged model can be gigabytes). The
output is not seekable, so sizes and CRCs follow each file in data descriptors; files over 4 GiB get ZIP64 records
because their size is known beforehand. Weights are stored as they are (they do not compress); text is deflated.
"""
from __future__ import annotations

import time
import zipfile
from collections.abc import Iterable, Iterator

from django.core.files.storage import default_storage

CHUNK_BYTES = 1024 * 1024
STORED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


class _Drain:
    """A write-only, unseekable file object whose bytes the generator takes out as they are written."""

    def __init__(self):
        self.chunks: list[bytes] = []

    def write(self, data) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


def _info(name: str, size: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
    info.compress_type = zipfile.ZIP_STORED if name.endswith(STORED_SUFFIXES) else zipfile.ZIP_DEFLATED
    info.file_size = size  # lets zipfile decide on ZIP64 before it has seen the data
    info.external_attr = 0o644 << 16
    return info


def stream_zip(entries: Iterable[tuple[str, str | bytes]]) -> Iterator[bytes]:
    """Zip bytes for `entries`: (name in the archive, storage name to copy, or the file's bytes)."""
    drain = _Drain()
    with zipfile.ZipFile(drain, mode="w", compresslevel=6) as archive:
        for name, source in entries:
            if isinstance(source, bytes):
                with archive.open(_info(name, len(source)), "w") as target:
                    target.write(source)
            else:
                with default_storage.open(source, "rb") as handle, \
                        archive.open(_info(name, default_storage.size(source)), "w") as target:
                    while chunk := handle.read(CHUNK_BYTES):
                        target.write(chunk)
                        if drain.chunks:
                            yield drain.take()
            if drain.chunks:
                yield drain.take()
    yield drain.take()  # the central directory, written when the archive closes
