"""An S3-compatible object store on loopback for tests and benchmarks: moto's server in its own process (so its
memory is not counted as ours), a fresh bucket, and the STORAGES setting and worker environment that use it."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import uuid

ACCESS_KEY = SECRET_KEY = "testing"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def moto_endpoint(timeout_s: float = 30):
    """Start moto's S3 server on a free loopback port; yields its URL and stops it afterwards."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start on port {port}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def make_bucket(endpoint: str) -> str:
    import boto3

    bucket = f"loraworks-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                 region_name=REGION).create_bucket(Bucket=bucket)
    return bucket


def s3_storages(endpoint: str, bucket: str) -> dict:
    """A STORAGES setting whose default storage is `bucket` (static files as configured)."""
    from django.conf import settings

    from webapp.storage import s3_storage

    default = s3_storage(bucket=bucket, endpoint=endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                         region=REGION)
    return {**settings.STORAGES, "default": default}


def s3_env(endpoint: str, bucket: str) -> dict:
    """Environment variables that put a worker process on the same bucket."""
    return {"STORAGE_BACKEND": "s3", "AWS_STORAGE_BUCKET_NAME": bucket, "AWS_S3_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_S3_REGION_NAME": REGION}
