"""compose.yaml has the production shape the README promises (no Docker here, so the YAML is checked directly)."""
from pathlib import Path

import yaml

COMPOSE = yaml.safe_load((Path(__file__).resolve().parents[1] / "compose.yaml").read_text())


def test_compose_declares_every_service():
    assert set(COMPOSE["services"]) == {"postgres", "redis", "web", "worker-train", "worker-train-large",
                                        "worker-infer", "worker-default"}


def test_web_migrates_then_serves_with_gunicorn():
    command = " ".join(COMPOSE["services"]["web"]["command"])
    assert command.index("migrate") < command.index("gunicorn webapp.wsgi")


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
    for name in ("web", "worker-train", "worker-train-large", "worker-infer", "worker-default"):
        service = COMPOSE["services"][name]
        env = service["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["PRODUCTION"] == "1"
        assert "artifacts:/data" in service["volumes"]
        assert set(service["depends_on"]) == {"postgres", "redis"}


def test_every_worker_is_health_checked_by_its_own_node_name():
    for name, service in COMPOSE["services"].items():
        if name.startswith("worker-"):
            command = service["command"]
            node = command[command.index("-n") + 1].replace("%h", "$$HOSTNAME")
            assert service["healthcheck"]["test"] == ["CMD-SHELL", f"python -m workers.healthcheck {node}"], name
