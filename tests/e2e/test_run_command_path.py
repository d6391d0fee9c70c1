"""The browser path against the app exactly as `./run.sh` serves it: `python -m webapp.localrun` starts gunicorn
(gthread workers), a real Celery worker and its own Redis; the test signs in with the demo credentials it prints,
uploads the ticket sample, trains the built-in MiniLM on it and follows the job page's live progress, which reaches
the browser as server-sent events through gunicorn."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser_steps import signed_in_page, submit_job_form, upload_sample, watch_to_the_end

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TRAINING = {"epochs": "1", "max_steps": "", "batch_size": "16", "max_length": "64", "eval_fraction": "0.1",
            "lr": "0.003", "rank": "8", "alpha": "16"}
# Every message the job page's EventSource receives, kept before the page handles it.
RECORD_STREAM = """
window.streamed = [];
const PageEventSource = window.EventSource;
window.EventSource = class extends PageEventSource {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (event) => window.streamed.push(JSON.parse(event.data)));
  }
};
"""


@pytest.fixture
def run_command(tmp_path, demo_lm_build):
    """`python -m webapp.localrun` on free ports with its own bundled Redis and database: (URL, user, password).
    The session's demo LM build is put where its worker looks, so the worker does not build it again."""
    from trainer import demo_models as recipe
    from trainer.models import model_cache_dir
    from webapp import localrun

    cached = model_cache_dir() / f"tiny-lm-v{recipe.RECIPE_VERSION}"
    if not (cached / "config.json").is_file():
        shutil.copytree(demo_lm_build[0], cached, dirs_exist_ok=True)
    web_port, redis_port = localrun.free_loopback_port(), localrun.free_loopback_port()
    env = dict(os.environ, VAR_DIR=str(tmp_path / "var"), PORT=str(web_port),
               REDIS_URL=f"redis://127.0.0.1:{redis_port}/0", DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3",
               WORKER_CONCURRENCY="1", WEB_CONCURRENCY="1")
    log = (tmp_path / "run.log").open("w+")
    process = subprocess.Popen([sys.executable, "-m", "webapp.localrun"], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, text=True)
    try:
        from jobs_helpers import wait_for

        def started():
            output = Path(log.name).read_text()
            assert process.poll() is None, output
            return output if "Loraworks is running at" in output else None
        output = wait_for(started, timeout_s=180, what="the run command to serve the app")
        user, password = re.search(r"Demo sign-in: user (\S+) / password (\S+)", output).groups()
        yield f"http://127.0.0.1:{web_port}", user, password
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        print(Path(log.name).read_text()[-4000:])


def test_the_run_command_serves_a_training_whose_progress_streams_through_gunicorn(browser, run_command, shoot,
                                                                                   tmp_path):
    url, user, password = run_command
    page = signed_in_page(browser, url, user, password, timeout_ms=60_000)

    upload_sample(page, shoot, "support-tickets", tmp_path / "sample")
    # The demo catalog is inspected by the worker after start-up: the form lists MiniLM once that is done.
    deadline = time.monotonic() + 180
    while True:
        page.goto("/jobs/new/")
        if page.locator("#id_base_model option", has_text="MiniLM-L6").count():
            break
        assert time.monotonic() < deadline, "MiniLM never appeared in the new job form"
        time.sleep(2)
    page.add_init_script(RECORD_STREAM)
    submit_job_form(page, shoot, "MiniLM-L6 (demo)", "Ticket router", TRAINING)
    widths = watch_to_the_end(page, shoot)
    assert page.inner_text("[data-live=state]").strip() == "succeeded", page.inner_text("main")

    streamed = page.evaluate("window.streamed")
    steps = [event["step"] for event in streamed if event.get("type") == "step"]
    total = int(page.inner_text("[data-live=step]"))
    # The worker publishes every step; the stream delivers those after the page subscribed, in order, ending at the
    # last one, and the bar drew them.
    assert steps and steps == sorted(steps) and steps[-1] == total, steps
    assert any(event.get("type") == "state" and event.get("state") == "succeeded" for event in streamed), streamed
    assert widths[-1] == "100%" and any(0 < float(width.rstrip("%")) < 100 for width in widths), widths

    job_id = re.search(r"/jobs/(\d+)/", page.url)[1]
    metrics = page.request.get(f"/jobs/{job_id}/download/metrics/").json()
    assert metrics["final_eval"]["accuracy"] > metrics["base_eval"]["accuracy"], metrics
    assert metrics["steps"] == total
