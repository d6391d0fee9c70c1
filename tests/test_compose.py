"""compose.yaml has the production shape the README promises (no Docker here, so the YAML is checked directly)."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
APP_SERVICES = ("web", "worker-train", "worker-train-large", "worker-infer", "worker-default")
GPU_WORKERS = ("worker-train", "worker-train-large")


def test_compose_declares_every_service():
    assert set(COMPOSE["services"]) == {"postgres", "redis", "web", "worker-train", "worker-train-large",
                                        "worker-infer", "worker-default", "minio", "minio-init"}


def test_web_migrates_then_serves_with_gunicorn_configured_as_everywhere_else():
    command = " ".join(COMPOSE["services"]["web"]["command"])
    assert command.index("migrate") < command.index("gunicorn webapp.wsgi -c python:webapp.gunicorn_conf")


def test_training_worker_serves_the_train_queue_one_job_at_a_time_on_a_gpu():
    worker = COMPOSE["services"]["worker-train"]
    command = worker["command"]
    assert command[command.index("-Q") + 1] == "train"
    assert command[command.index("--concurrency") + 1] == "1"
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_the_large_training_worker_serves_its_class_queue_and_plain_train_and_starts_only_with_its_profile():
    worker = COMPOSE["services"]["worker-train-large"]
    command = worker["command"]
    assert command[command.index("-Q") + 1].split(",") == ["train", "train.gpu-large"]
    assert command[command.index("--concurrency") + 1] == "1"
    assert worker["profiles"] == ["gpu-large"]
    assert worker["deploy"] == COMPOSE["services"]["worker-train"]["deploy"]


def test_inference_worker_serves_the_infer_queue_in_one_process_so_its_cache_is_shared():
    command = COMPOSE["services"]["worker-infer"]["command"]
    assert command[command.index("-Q") + 1] == "infer"
    assert command[command.index("--concurrency") + 1] == "1"


def test_some_worker_serves_the_default_queue():
    queues = [s["command"][s["command"].index("-Q") + 1] for name, s in COMPOSE["services"].items()
              if name.startswith("worker-")]
    assert "default" in ",".join(queues).split(",")


def test_app_services_share_settings_and_artifact_storage_through_env_and_volume():
    for name in APP_SERVICES:
        service = COMPOSE["services"][name]
        env = service["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["PRODUCTION"] == "1" and env["ALLOWED_HOSTS"].startswith("${ALLOWED_HOSTS")
        assert "artifacts:/data" in service["volumes"]
        assert {k: v["condition"] for k, v in service["depends_on"].items()} == {
            "postgres": "service_healthy", "redis": "service_healthy",
            "minio-init": "service_completed_successfully"}


def test_every_app_service_reads_the_optional_dot_env_so_any_documented_setting_can_be_set():
    for name in APP_SERVICES:
        assert COMPOSE["services"][name]["env_file"] == [{"path": ".env", "required": False}], name


def test_the_minio_object_store_and_its_bucket_init_start_only_with_the_s3_profile():
    minio, init = COMPOSE["services"]["minio"], COMPOSE["services"]["minio-init"]
    assert minio["profiles"] == init["profiles"] == ["s3"]
    assert minio["command"][:2] == ["server", "/data"] and "miniodata:/data" in minio["volumes"]
    assert "miniodata" in COMPOSE["volumes"]
    assert init["depends_on"] == {"minio": {"condition": "service_healthy"}} and init["restart"] == "no"
    script = init["entrypoint"][-1]
    assert "mc alias set store http://minio:9000" in script and 'mc mb --ignore-existing "store/$$BUCKET"' in script
    # Outside the s3 profile the app must still start: its wait on the bucket init is not required.
    for name in APP_SERVICES:
        assert COMPOSE["services"][name]["depends_on"]["minio-init"]["required"] is False, name


def test_unset_storage_variables_point_the_app_at_the_minio_service_with_its_credentials_and_bucket():
    minio, init = COMPOSE["services"]["minio"]["environment"], COMPOSE["services"]["minio-init"]["environment"]
    for name in APP_SERVICES:
        env = COMPOSE["services"][name]["environment"]
        assert env["STORAGE_BACKEND"] == "${STORAGE_BACKEND:-local}"
        assert env["AWS_S3_ENDPOINT_URL"] == "${AWS_S3_ENDPOINT_URL-http://minio:9000}"  # set empty: AWS itself
        assert env["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"] == init["MINIO_ROOT_USER"]
        assert env["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"] == init["MINIO_ROOT_PASSWORD"]
        assert env["AWS_STORAGE_BUCKET_NAME"] == init["BUCKET"] == "${AWS_STORAGE_BUCKET_NAME:-loraworks}"
        assert env["AWS_S3_ADDRESSING_STYLE"] == "${AWS_S3_ADDRESSING_STYLE:-}"
        assert "AWS_S3_REGION_NAME" in env


def test_gpu_workers_build_a_cuda_torch_image_and_the_others_the_cpu_one():
    for name in APP_SERVICES:
        service = COMPOSE["services"][name]
        build = service["build"]
        assert build["context"] == "."
        if name in GPU_WORKERS:
            assert build["args"]["TORCH_INDEX"] == "${TORCH_INDEX_GPU:-https://download.pytorch.org/whl/cu128}"
            assert service["image"] == "loraworks-gpu:latest"
            assert service["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
        else:
            assert build["args"]["TORCH_INDEX"] == "${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
            assert service["image"] == "loraworks:latest" and "deploy" not in service


def test_the_dockerfile_takes_the_torch_index_as_a_build_arg_and_installs_the_pinned_torch():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in dockerfile
    assert '--extra-index-url "$TORCH_INDEX"' in dockerfile
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "torch==2.13.0" in project["dependencies"]


def test_the_image_copies_every_package_so_each_console_script_can_import():
    copied = set(re.findall(r"^COPY (\S+) \1$", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {pattern.rstrip("*") for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied
    for script, target in project["project"]["scripts"].items():
        assert target.split(".")[0] in copied, script


def test_every_worker_is_health_checked_by_its_own_node_name():
    for name, service in COMPOSE["services"].items():
        if name.startswith("worker-"):
            command = service["command"]
            node = command[command.index("-n") + 1].replace("%h", "$$HOSTNAME")
            assert service["healthcheck"]["test"] == ["CMD-SHELL", f"python -m workers.healthcheck {node}"], name
