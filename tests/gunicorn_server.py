"""gunicorn serving the app for a test, as run.sh starts it: a subprocess on a loopback port, waited for until it
answers, stopped at the end."""
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def gunicorn_serving(env: dict, port: int, log_path: Path, *options: str):
    """Run `gunicorn webapp.wsgi` with `env` and extra `options` (worker class, threads, timeouts), its output in
    `log_path`; yields its base URL once /api/schema answers (within 60 s), terminates it afterwards."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "webapp.wsgi", "--bind", f"127.0.0.1:{port}",
                                    "--workers", "1", *options],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/schema", timeout=2).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.3)
        try:
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)
