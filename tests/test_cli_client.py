"""The `loraworks` command line against a live server and a real worker: log in (token saved 0600), upload a
dataset, create a job on a tiny model, watch it to the end, download its adapter, ask the playground; and the exit
codes scripts rely on."""
import json
import os
import re
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from jobs_helpers import completion_rows, tiny_entry
from test_api_schema import new_api

from webapp.env import Rate

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.usefixtures("celery_worker"), pytest.mark.slow]


@pytest.fixture
def cli(live_server, tmp_path, settings):
    """Run `python -m loraworks_cli ARGS` with its own config file; returns (exit code, stdout, stderr)."""
    env = dict(os.environ, LORAWORKS_CONFIG=str(tmp_path / "cli" / "config.json"))
    env.pop("LORAWORKS_TOKEN", None)
    env.pop("LORAWORKS_URL", None)

    def run(*args, timeout=300):
        done = subprocess.run([sys.executable, "-m", "loraworks_cli", *map(str, args)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)
        return done.returncode, done.stdout.strip(), done.stderr.strip()

    run.config = Path(env["LORAWORKS_CONFIG"])
    run.url, run.settings = live_server.url, settings
    return run


@pytest.fixture
def token(live_server):
    return new_api(live_server, "alice", "Team A").token


def test_a_whole_job_from_upload_to_playground_through_the_cli(cli, token, tmp_path):
    llama = tiny_entry("llama", tmp_path / "llama")
    code, _, err = cli("login", cli.url, "--token", token)
    assert code == 0 and "alice" in err
    assert stat.S_IMODE(cli.config.stat().st_mode) == 0o600
    assert json.loads(cli.config.read_text()) == {"url": cli.url, "token": token}

    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in completion_rows(24)))
    code, dataset_id, err = cli("datasets", "upload", data, "--name", "sums", "--wait", "--interval", "0.3")
    assert code == 0 and dataset_id.isdigit() and "ready" in err

    code, _, err = cli("jobs", "create", "--model", llama.source, "--dataset", dataset_id, "--worker-class", "nowhere")
    assert code == 2 and "[worker_class]" in err and "nowhere" in err  # no live worker serves that class

    code, job_id, err = cli("jobs", "create", "--model", llama.source, "--dataset", dataset_id, "--name", "cli job",
                            "--rank", 4, "--alpha", 8, "--max-steps", 3, "--batch-size", 4, "--max-length", 64,
                            "--lr", "1e-3", "--eval-fraction", "0.2", "--merge", "--quantize", "nf4", "--dtype",
                            "fp32")
    assert code == 0 and job_id.isdigit(), err

    code, out, err = cli("jobs", "watch", job_id, "--interval", "0.5")
    assert code == 0, err
    assert out == f"{job_id} succeeded"
    assert "queued -> running" in err
    assert re.search(r"step [1-3]/3  loss \d+\.\d{4}", err), err  # the bar showed real steps and losses
    assert f"loading {llama.source}" in err and "uploading the adapter and the merged model" in err  # log lines
    assert "base weights in fp32, block linears quantized to nf4" in err  # a 4-bit (QLoRA) base
    assert "the nf4 base dequantized to float32, its own dtype, then merged" in err

    target = tmp_path / "adapter.zip"
    code, out, err = cli("jobs", "download", job_id, "--adapter", "-o", target)
    assert code == 0 and out == str(target)
    assert any(n.endswith("adapter_model.safetensors") for n in zipfile.ZipFile(target).namelist())
    merged = tmp_path / "merged.zip"
    code, out, err = cli("jobs", "download", job_id, "--merged", "-o", merged)
    assert code == 0 and out == str(merged), err
    names = zipfile.ZipFile(merged).namelist()
    assert any(n.endswith("config.json") for n in names) and any(n.endswith(".safetensors") for n in names)
    assert not list(tmp_path.glob(".*.part"))

    code, out, err = cli("playground", job_id, "Say 3 twice:", "--temperature", 0, "--max-new-tokens", 6, "--json")
    assert code == 0, err
    assert set(json.loads(out)) == {"base", "tuned"}

    code, _, err = cli("jobs", "cancel", job_id)
    assert code == 5 and "already succeeded" in err

    code, _, err = cli("jobs", "create", "--model", llama.source, "--dataset", dataset_id, "--start-from", 999999)
    assert code == 4 and "[start_from]" in err and "no job 999999 in your team" in err
    code, child_id, err = cli("jobs", "create", "--model", llama.source, "--dataset", dataset_id, "--start-from",
                              job_id, "--max-steps", 1, "--batch-size", 4, "--max-length", 64)
    assert code == 0 and child_id.isdigit(), err
    code, _, err = cli("jobs", "watch", child_id, "--interval", "0.5")
    assert code == 0 and "continuing from the adapter in start_from" in err, err
    code, out, _ = cli("jobs", "show", child_id, "--json")
    assert json.loads(out)["start_from"] == int(job_id)

    code, out, _ = cli("jobs", "show", job_id, "--json")
    shown = json.loads(out)
    assert shown["status"] == "succeeded" and shown["final_eval"] is not None
    assert shown["params"]["trainable"] > 0


def test_a_job_cancelled_before_it_ends_is_cancelled_and_watch_exits_1(cli, token, tmp_path):
    llama = tiny_entry("llama", tmp_path / "llama")
    assert cli("login", cli.url, "--token", token)[0] == 0
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in completion_rows(24)))
    dataset_id = cli("datasets", "upload", data, "--wait", "--interval", "0.3")[1]
    code, job_id, err = cli("jobs", "create", "--model", llama.source, "--dataset", dataset_id, "--max-steps", 100000,
                            "--batch-size", 2, "--max-length", 32)
    assert code == 0, err
    code, out, err = cli("jobs", "cancel", job_id, "--json")
    assert code == 0, err
    answer = json.loads(out)
    # Queued: cancelled at once. Running already: it stops at its next step.
    assert (answer["status"], answer["outcome"]) in (("cancelled", "cancelled"), ("running", "stopping"))
    code, out, err = cli("jobs", "watch", job_id, "--interval", "0.3")
    assert (code, out) == (1, f"{job_id} cancelled") and f"Job {job_id} cancelled" in err
    assert json.loads(cli("jobs", "show", job_id, "--json")[1])["status"] == "cancelled"
    assert cli("jobs", "cancel", job_id)[0] == 5


def test_the_installed_loraworks_command_runs(tmp_path):
    command = Path(sys.executable).parent / "loraworks"
    done = subprocess.run([command, "--help"], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, LORAWORKS_CONFIG=str(tmp_path / "config.json")))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: loraworks") and "jobs" in done.stdout and "7 too large" in done.stdout


def test_exit_codes_fit_scripting(cli, token, tmp_path):
    assert cli("whoami")[0] == 3  # not logged in
    assert cli("login", cli.url, "--token", "lw_not-a-token")[0] == 3
    assert not cli.config.exists()
    assert cli("login", cli.url, "--token", token)[0] == 0
    code, out, err = cli("jobs", "show", 999999)
    assert (code, out) == (4, "") and "not found" in err
    missing = tmp_path / "missing.jsonl"
    assert cli("datasets", "upload", missing)[0] == 2
    bad = tmp_path / "notes.docx"
    bad.write_text("hello")
    code, _, err = cli("datasets", "upload", bad)
    assert code == 2 and "[file]" in err
    assert cli("jobs", "create", "--model", "org/none", "--dataset", 1)[0] == 4
    assert cli("jobs", "download", 1)[0] == 2  # argparse: --adapter or --merged is required
    cli.settings.API_RATE_LIMIT_JOBS = Rate(1, 3600)
    cli("jobs", "create", "--model", "org/none", "--dataset", 1)  # counted even though refused
    code, _, err = cli("jobs", "create", "--model", "org/none", "--dataset", 1)
    assert code == 6 and "Retry-After" in err
    assert cli("logout")[0] == 0 and not cli.config.exists()


def test_an_unreachable_server_is_exit_code_8(cli):
    code, _, err = cli("login", "http://127.0.0.1:9", "--token", "lw_x")
    assert code == 8 and "cannot reach" in err
