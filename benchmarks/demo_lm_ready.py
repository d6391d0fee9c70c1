"""How long a fresh `./run.sh` takes to have the demo LM ("demo/tiny-lm") ready, and what its build costs.

Starts `python -m webapp.localrun` (what ./run.sh runs) with a fresh database, var folder, model cache and its own
Redis on free ports, so the demo LM is built from nothing, exactly as on a first start. It then reads the catalog
row of demo/tiny-lm from the SQLite database every 0.2 s until it is ready, and prints one JSON object: seconds
from launch until the app served its login page and until the demo LM was ready, the build progress seen on the
way (what the Models page shows), the build's own figures from demo_build.json (wall seconds, final training
loss), and the load average before and after (the machine may be shared).

    python benchmarks/demo_lm_ready.py [--timeout 600]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def catalog_row(db: Path) -> tuple[str, dict] | None:
    """(status, info) of the demo LM's catalog entry, or None before the migration made it."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as connection:
            row = connection.execute("SELECT status, info FROM catalog_basemodel WHERE source = 'demo/tiny-lm'"
                                     ).fetchone()
    except sqlite3.Error:
        return None
    return (row[0], json.loads(row[1] or "{}")) if row else None


def serves(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def main() -> None:
    from webapp.localrun import free_loopback_port

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="demo-lm-ready-") as scratch:
        work = Path(scratch)
        db, port = work / "db.sqlite3", free_loopback_port()
        env = dict(os.environ, VAR_DIR=str(work / "var"), LORAWORKS_MODEL_CACHE=str(work / "models"),
                   DATABASE_URL=f"sqlite:///{db}", PORT=str(port),
                   REDIS_URL=f"redis://127.0.0.1:{free_loopback_port()}/0", HF_HUB_OFFLINE="1")
        load_before = os.getloadavg()
        started = time.monotonic()
        process = subprocess.Popen([sys.executable, "-m", "webapp.localrun"], cwd=ROOT, env=env,
                                   stdout=(work / "run.log").open("w"), stderr=subprocess.STDOUT)
        serving_s, progress, ready_s, status = None, [], None, None
        try:
            while time.monotonic() - started < args.timeout and process.poll() is None:
                now = time.monotonic() - started
                if serving_s is None and serves(f"http://127.0.0.1:{port}/login/"):
                    serving_s = now
                row = catalog_row(db)
                if row:
                    status, info = row
                    step = (info.get("build") or {}).get("step")
                    if step and (not progress or progress[-1]["step"] != step):
                        progress.append({"s": round(now, 1), "step": step, "steps": info["build"]["steps"]})
                    if status != "inspecting":
                        ready_s = now
                        break
                time.sleep(0.2)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
        builds = list((work / "models").glob("tiny-lm-v*/demo_build.json"))
        build = json.loads(builds[0].read_text()) if builds else {}
        print(json.dumps({
            "status": status, "seconds_to_serving": serving_s and round(serving_s, 1),
            "seconds_to_demo_lm_ready": ready_s and round(ready_s, 1),
            "build_seconds": build.get("build_seconds"), "final_train_loss": build.get("final_train_loss"),
            "steps": build.get("steps"), "progress_updates_seen": len(progress),
            "first_and_last_progress": progress[:1] + progress[-1:], "cpus": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()]}, indent=1))


if __name__ == "__main__":
    main()
