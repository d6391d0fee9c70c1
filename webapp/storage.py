"""Where uploads and artifacts live: the Django `default` storage chosen from environment variables, and what the
operations page reports about it.

STORAGE_BACKEND=local (the default) keeps files in MEDIA_ROOT, one machine's folder. STORAGE_BACKEND=s3 puts them
in an S3-compatible bucket (AWS S3, MinIO, Ceph, moto) through django-storages and boto3, so that workers on other
machines read datasets and write artifacts without sharing a disk with the web host:

  AWS_STORAGE_BUCKET_NAME  bucket (required with s3; it must exist)
  AWS_S3_ENDPOINT_URL      endpoint of a non-AWS store, e.g. http://minio:9000 (empty: AWS itself)
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY   credentials (empty: boto3's own chain, e.g. an instance role)
  AWS_S3_REGION_NAME       region (empty: the store's default)
  AWS_S3_ADDRESSING_STYLE  path or virtual (empty: path with a custom endpoint, boto3's choice on AWS)

This module is read by webapp.settings, so it imports nothing that needs configured settings at import time.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from webapp.env import env_str

BACKENDS = ("local", "s3")
# Reads of an S3 object spool into a temp file beyond this size. django-storages' default (0) never spools, so a
# multi-gigabyte merged model would be held in memory whole while it streams to a download or a worker.
S3_SPOOL_BYTES = 8 * 1024 * 1024
# Uploads go up in parts of this size, at most S3_PARTS_IN_MEMORY read ahead: boto3's default (10) would hold
# 80 MiB per upload, and a seekable file's parts are read into memory.
S3_PART_BYTES = 8 * 1024 * 1024
S3_PARTS_IN_MEMORY = 4


def default_storage_from_env() -> dict:
    """The STORAGES["default"] entry for STORAGE_BACKEND (local storage follows settings.MEDIA_ROOT)."""
    backend = env_str("STORAGE_BACKEND", "local").strip().lower() or "local"
    if backend == "local":
        return {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    if backend == "s3":
        return s3_storage(bucket=env_str("AWS_STORAGE_BUCKET_NAME", ""), endpoint=env_str("AWS_S3_ENDPOINT_URL", ""),
                          access_key=env_str("AWS_ACCESS_KEY_ID", ""), secret_key=env_str("AWS_SECRET_ACCESS_KEY", ""),
                          region=env_str("AWS_S3_REGION_NAME", ""),
                          addressing_style=env_str("AWS_S3_ADDRESSING_STYLE", ""))
    raise ImproperlyConfigured(f"STORAGE_BACKEND={backend!r} is not one of: {', '.join(BACKENDS)}")


def s3_storage(*, bucket: str, endpoint: str = "", access_key: str = "", secret_key: str = "", region: str = "",
               addressing_style: str = "") -> dict:
    """A STORAGES entry for an S3-compatible bucket (also used by tests and benchmarks against moto)."""
    if not bucket:
        raise ImproperlyConfigured("STORAGE_BACKEND=s3 needs AWS_STORAGE_BUCKET_NAME (an existing bucket)")
    if addressing_style not in ("", "path", "virtual", "auto"):
        raise ImproperlyConfigured(f"AWS_S3_ADDRESSING_STYLE={addressing_style!r} is not one of: path, virtual, auto")
    options = {
        "bucket_name": bucket,
        "endpoint_url": endpoint or None,
        "access_key": access_key or None,
        "secret_key": secret_key or None,
        "region_name": region or None,
        # Self-hosted stores on a bare host name or IP have no per-bucket DNS names.
        "addressing_style": addressing_style or ("path" if endpoint else None),
        "file_overwrite": True,  # our names are unique (uuid, job id): no HEAD per save to find a free one
        "default_acl": None,  # private; downloads go through the web app, which checks the team
        "querystring_auth": True,
        "max_memory_size": S3_SPOOL_BYTES,
        "transfer_config": transfer_config(),
    }
    return {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": options}


def transfer_config():
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_chunksize=S3_PART_BYTES, max_concurrency=S3_PARTS_IN_MEMORY)
    config.max_in_memory_upload_chunks = S3_PARTS_IN_MEMORY  # s3transfer's name; boto3's constructor lacks it
    return config


def is_local(storage) -> bool:
    return hasattr(storage, "location") and not hasattr(storage, "bucket_name")


def describe(storage) -> str:
    """One line for the operations page: which folder or bucket."""
    if is_local(storage):
        return f"local folder {storage.location}"
    endpoint = getattr(storage, "endpoint_url", None) or "AWS S3"
    return f"S3 bucket {storage.bucket_name} at {endpoint}"


def free_bytes(storage) -> int | None:
    """Free space under a local storage folder (its nearest existing parent); None for an object store."""
    if not is_local(storage):
        return None
    folder = Path(storage.location)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_reachable(storage) -> None:
    """Raise if the storage cannot be listed (a missing bucket, bad credentials, an unreachable endpoint)."""
    if is_local(storage):
        Path(storage.location).mkdir(parents=True, exist_ok=True)
    storage.listdir("")
