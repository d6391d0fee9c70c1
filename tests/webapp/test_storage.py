"""Artifact storage chosen by environment: the local folder by default, an S3-compatible bucket (moto's server on
loopback here) with STORAGE_BACKEND=s3; uploads, artifacts, downloads and worker copies all go through it."""
import io
import json
import tracemalloc
import zipfile

import boto3
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import default_storage
from django.test import override_settings

from s3_helpers import ACCESS_KEY, REGION, SECRET_KEY, make_bucket, moto_endpoint, s3_storages
from test_datasets_support import upload
from webapp import storage
from webapp.datasets.models import Dataset
from webapp.jobs.storage import delete_tree, get_file, put_file, put_tree
from webapp.results.artifacts import walk
from webapp.results.zips import stream_zip
from workers.dataset_tasks import local_copy

S3_VARIABLES = ("STORAGE_BACKEND", "AWS_STORAGE_BUCKET_NAME", "AWS_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY", "AWS_S3_REGION_NAME", "AWS_S3_ADDRESSING_STYLE")


@pytest.fixture
def clean_env(monkeypatch):
    for name in S3_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture(scope="module")
def endpoint():
    with moto_endpoint() as url:
        yield url


@pytest.fixture
def bucket(endpoint):
    """A fresh bucket that is Django's default storage for the test; yields a boto3 client and the bucket name."""
    name = make_bucket(endpoint)
    with override_settings(STORAGES=s3_storages(endpoint, name)):
        yield boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY,
                           aws_secret_access_key=SECRET_KEY, region_name=REGION), name


def keys(client, bucket_name: str) -> list[str]:
    return sorted(item["Key"] for item in client.list_objects_v2(Bucket=bucket_name).get("Contents", []))


def test_the_local_folder_is_the_default(clean_env):
    assert storage.default_storage_from_env() == {"BACKEND": "django.core.files.storage.FileSystemStorage"}
    clean_env.setenv("STORAGE_BACKEND", "local")
    assert storage.default_storage_from_env()["BACKEND"].endswith("FileSystemStorage")


def test_s3_settings_come_from_the_environment(clean_env):
    clean_env.setenv("STORAGE_BACKEND", "S3")
    clean_env.setenv("AWS_STORAGE_BUCKET_NAME", "artifacts")
    clean_env.setenv("AWS_S3_ENDPOINT_URL", "http://minio:9000")
    clean_env.setenv("AWS_ACCESS_KEY_ID", "key")
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    options = storage.default_storage_from_env()["OPTIONS"]
    assert (options["bucket_name"], options["endpoint_url"], options["access_key"], options["secret_key"]) == \
        ("artifacts", "http://minio:9000", "key", "secret")
    assert options["addressing_style"] == "path" and options["region_name"] is None
    assert options["max_memory_size"] == storage.S3_SPOOL_BYTES and options["default_acl"] is None


def test_aws_itself_needs_no_endpoint_and_keeps_boto3s_credential_chain(clean_env):
    clean_env.setenv("STORAGE_BACKEND", "s3")
    clean_env.setenv("AWS_STORAGE_BUCKET_NAME", "artifacts")
    clean_env.setenv("AWS_S3_REGION_NAME", "eu-west-1")
    options = storage.default_storage_from_env()["OPTIONS"]
    assert options["endpoint_url"] is None and options["addressing_style"] is None
    assert options["access_key"] is None and options["secret_key"] is None and options["region_name"] == "eu-west-1"


@pytest.mark.parametrize("env, named", [
    ({"STORAGE_BACKEND": "s3"}, "AWS_STORAGE_BUCKET_NAME"),
    ({"STORAGE_BACKEND": "ftp"}, "STORAGE_BACKEND='ftp' is not one of: local, s3"),
    ({"STORAGE_BACKEND": "s3", "AWS_STORAGE_BUCKET_NAME": "b", "AWS_S3_ADDRESSING_STYLE": "dns"},
     "AWS_S3_ADDRESSING_STYLE='dns'"),
])
def test_a_bad_storage_setting_is_refused_naming_the_variable(clean_env, env, named):
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(ImproperlyConfigured, match=named):
        storage.default_storage_from_env()


def test_job_artifacts_go_up_list_zip_come_back_and_are_deleted_in_the_bucket(bucket, tmp_path):
    client, name = bucket
    adapter = tmp_path / "adapter"
    (adapter / "nested").mkdir(parents=True)
    (adapter / "adapter_config.json").write_text('{"r": 4}')
    (adapter / "adapter_model.safetensors").write_bytes(b"\x01" * 5000)
    (adapter / "nested" / "notes.txt").write_text("hi")
    assert put_tree(adapter, "jobs/7/adapter/") == [
        "jobs/7/adapter/adapter_config.json", "jobs/7/adapter/adapter_model.safetensors", "jobs/7/adapter/nested/notes.txt"]
    assert keys(client, name) == ["jobs/7/adapter/adapter_config.json", "jobs/7/adapter/adapter_model.safetensors",
                                  "jobs/7/adapter/nested/notes.txt"]
    assert [relative for relative, _ in walk("jobs/7/adapter")] == [
        "adapter_config.json", "adapter_model.safetensors", "nested/notes.txt"]
    archive = zipfile.ZipFile(io.BytesIO(b"".join(stream_zip([(f"a/{r}", s) for r, s in walk("jobs/7/adapter")]))))
    assert archive.read("a/adapter_model.safetensors") == b"\x01" * 5000
    assert json.loads(archive.read("a/adapter_config.json")) == {"r": 4}
    assert get_file("jobs/7/adapter/nested/notes.txt", tmp_path / "back.txt").read_text() == "hi"
    delete_tree("jobs/7/")
    assert keys(client, name) == []


@pytest.mark.slow
def test_a_large_object_streams_both_ways_without_being_held_in_memory(bucket, tmp_path):
    big = tmp_path / "merged.safetensors"
    with open(big, "wb") as handle:
        for i in range(96):
            handle.write(bytes([i]) * 2**20)
    tracemalloc.start()
    try:
        put_file(big, "jobs/8/merged/model.safetensors")
        get_file("jobs/8/merged/model.safetensors", tmp_path / "back.safetensors")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (tmp_path / "back.safetensors").read_bytes() == big.read_bytes()
    # Bounded by the parts in flight (4 x 8 MiB, each copied once more while signed), not by the object's size.
    assert peak < 72 * 2**20, f"peak {peak / 2**20:.1f} MiB of Python memory for a 96 MiB object"


def test_an_existing_name_is_replaced_not_renamed(bucket, tmp_path):
    client, name = bucket
    for text in ("one", "two"):
        (tmp_path / "metrics.json").write_text(text)
        assert put_file(tmp_path / "metrics.json", "jobs/9/metrics.json") == "jobs/9/metrics.json"
    assert keys(client, name) == ["jobs/9/metrics.json"]
    assert default_storage.open("jobs/9/metrics.json").read() == b"two"


@pytest.mark.django_db
def test_a_dataset_upload_through_the_web_app_lands_in_the_bucket(member_client, bucket, settings, tmp_path):
    client, name = bucket
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path)
    content = b'{"text": "hello there"}\n' * 1000
    response = upload(member_client, "greetings.jsonl", content)
    assert response.status_code == 302
    dataset = Dataset.objects.get()
    assert keys(client, name) == [dataset.file.name]
    assert client.get_object(Bucket=name, Key=dataset.file.name)["Body"].read() == content
    with local_copy(dataset.file.name) as path:  # how the validation worker reads it: a streamed temp copy
        assert open(path, "rb").read() == content
    assert list(tmp_path.iterdir()) == []


def test_the_bucket_is_reachable_and_described_and_a_missing_one_is_an_error(endpoint, bucket):
    storage.check_reachable(default_storage)
    assert storage.describe(default_storage) == f"S3 bucket {bucket[1]} at {endpoint}"
    assert storage.free_bytes(default_storage) is None
    with override_settings(STORAGES=s3_storages(endpoint, "no-such-bucket")):
        with pytest.raises(Exception, match="NoSuchBucket|does not exist"):
            storage.check_reachable(default_storage)
