"""Serving many adapters on one base: gunicorn and one `infer` worker on loopback, C concurrent streaming clients
calling /v1/chat/completions for a bounded time per scenario. A random-init Llama-style base (the demo LM's shape,
widened) gets 8 LoRA adapters (rank 8 on q/k/v/o). Scenarios, each with a fresh worker process:

  base        every client calls the base model alone (the worker's memory reference)
  1-adapter   every client calls job 1
  8-adapters  client i calls job i % 8: mixed-adapter batches on one base
  8-merged    client i calls merged model i % 8: one full model copy per adapter (the worker keeps all 8 loaded)

Prints requests/s, time to first token (p50/p95), generated tokens/s, and the worker's peak memory (VmHWM) per
scenario, then 8 adapters against 1 adapter and against one merged model per adapter, and memory against the base.

  .venv/bin/python benchmarks/serving.py [--clients 32] [--seconds 20] [--max-tokens 16] [--redis-url URL]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADAPTERS = 8
PROMPT = "Explain what a list comprehension is"


def setup_django(folder: Path, redis_url: str) -> dict:
    env = dict(os.environ, VAR_DIR=str(folder), DATABASE_URL=f"sqlite:///{folder}/db.sqlite3", REDIS_URL=redis_url,
               DJANGO_SETTINGS_MODULE="webapp.settings", DEBUG="0", LOG_LEVEL="WARNING", HF_HUB_OFFLINE="1",
               MEDIA_ROOT=str(folder / "media"), API_RATE_LIMIT_SERVING="0", SERVE_BASE_CACHE=str(ADAPTERS),
               SERVE_MAX_BATCH="64", TOKENIZERS_PARALLELISM="false")
    os.environ.update(env)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    return env


def build_models(folder: Path) -> tuple[Path, list[Path], list[Path]]:
    """(base folder, adapter folders, merged model folders)."""
    import torch

    from trainer.adapter_io import save_adapter
    from trainer.config import LoraSettings
    from trainer.demo_models import DemoSpec, build_model, build_tokenizer, corpus_text
    from trainer.inject import apply_lora, merge_and_unload
    from trainer.models import load_model

    torch.manual_seed(0)
    tokenizer = build_tokenizer(corpus_text(200_000), 2048)
    base = folder / "base"
    build_model(DemoSpec(hidden_size=384, layers=6, heads=6, intermediate_size=1024), tokenizer).save_pretrained(base)
    tokenizer.save_pretrained(base)
    settings = LoraSettings(rank=8, alpha=16, dropout=0.0, targets="attention")
    adapters, merged = [], []
    for i in range(ADAPTERS):
        model, _ = load_model(str(base), "causal-lm")
        handle = apply_lora(model, settings, "causal-lm")
        generator = torch.Generator().manual_seed(i + 1)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
        adapters.append(save_adapter(model, folder / f"adapter-{i}", base_model_name_or_path=str(base),
                                     task="causal-lm", settings=settings, target_modules=handle.target_modules,
                                     modules_to_save=[]))
        tokenizer.save_pretrained(adapters[-1])
        merge_and_unload(model).save_pretrained(folder / f"merged-{i}")
        tokenizer.save_pretrained(folder / f"merged-{i}")
        merged.append(folder / f"merged-{i}")
    return base, adapters, merged


def register(base: Path, adapters: list[Path], merged: list[Path]) -> tuple[str, list[str]]:
    """Team, token, catalog entries and succeeded jobs; returns (token secret, job model names)."""
    from django.contrib.auth import get_user_model

    from webapp.accounts.tokens import issue_token
    from webapp.catalog.models import BaseModel
    from webapp.datasets.models import Dataset
    from webapp.jobs.models import Job
    from webapp.jobs.storage import put_tree
    from webapp.teams.accounts import add_user_to_team
    from webapp.teams.models import Team

    user = get_user_model().objects.create_user("bench", password="bench-pw-123456")
    add_user_to_team("bench", "Bench")
    team = Team.objects.get(name="Bench")
    _, secret = issue_token(user, team, "bench")
    for source in [base, *merged]:
        BaseModel.objects.create(name=source.name, source=str(source), status="ready", task_types=["causal-lm"])
    dataset = Dataset.objects.create(team=team, name="bench", original_filename="b.jsonl", file="datasets/b.jsonl",
                                     status="ready", format="chat", task="causal-lm", rows=1)
    names = []
    for i, adapter in enumerate(adapters):
        job = Job.objects.create(team=team, name=f"adapter {i}", base_model=BaseModel.objects.get(source=str(base)),
                                 dataset=dataset, task="causal-lm", settings={}, state="succeeded",
                                 metrics={"data": {"format": "chat"}, "config": {"seed": 0}})
        put_tree(adapter, f"jobs/{job.pk}/adapter/")
        Job.objects.filter(pk=job.pk).update(artifacts={"adapter": f"jobs/{job.pk}/adapter/", "merged": None})
        names.append(f"job-{job.pk}")
    return secret, names


def start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def pool_pids(process: subprocess.Popen) -> list[int]:
    found = []
    for task in Path(f"/proc/{process.pid}/task").iterdir():
        found += [int(pid) for pid in (task / "children").read_text().split()]
    return found


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one_call(port: int, secret: str, model: str, max_tokens: int, seed: int) -> tuple[float, int]:
    """(seconds to the first content chunk, completion tokens) of one streamed chat completion."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens,
                       "temperature": 0.8, "seed": seed, "stream": True, "stream_options": {"include_usage": True}})
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    started = time.monotonic()
    connection.request("POST", "/v1/chat/completions", body, {"Authorization": f"Bearer {secret}",
                                                              "Content-Type": "application/json"})
    response = connection.getresponse()
    if response.status != 200:
        raise RuntimeError(f"{response.status}: {response.read()[:300]!r}")
    first, tokens = None, 0
    for raw in response:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if "error" in chunk:
            raise RuntimeError(chunk["error"]["message"])
        if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            first = time.monotonic() - started
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
    connection.close()
    return (first if first is not None else time.monotonic() - started), tokens


def load(port: int, secret: str, models: list[str], clients: int, seconds: float, max_tokens: int) -> dict:
    ttfts, tokens, errors = [], [0], []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(i: int):
        n = 0
        while time.monotonic() < deadline:
            try:
                ttft, count = one_call(port, secret, models[i % len(models)], max_tokens, seed=i * 1000 + n)
            except Exception as error:  # noqa: BLE001 - counted and shown
                with lock:
                    errors.append(str(error))
                return
            with lock:
                ttfts.append(ttft)
                tokens[0] += count
            n += 1

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    ttfts.sort()
    return {"requests_s": len(ttfts) / wall, "tokens_s": tokens[0] / wall, "requests": len(ttfts),
            "ttft_p50": statistics.median(ttfts) if ttfts else float("nan"),
            "ttft_p95": ttfts[int(0.95 * (len(ttfts) - 1))] if ttfts else float("nan"), "errors": errors}


def wait_for(predicate, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not come up in {timeout_s:g} s")
        time.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0, help="load time per scenario")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14"),
                        help="a Redis database this benchmark may flush")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="loraworks-serving-"))
    env = setup_django(folder, args.redis_url)
    import redis

    redis.Redis.from_url(args.redis_url).flushdb()
    base, adapters, merged = build_models(folder / "models")
    secret, jobs = register(base, adapters, merged)
    from webapp.localrun import free_loopback_port

    port = free_loopback_port()
    web = start([sys.executable, "-m", "gunicorn", "webapp.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2",
                 "--worker-class", "gthread", "--threads", str(args.clients + 4), "--timeout", "300"],
                env, folder / "gunicorn.log")
    scenarios = {"base": [str(base)], "1-adapter": jobs[:1], "8-adapters": jobs, "8-merged": [str(m) for m in merged]}
    results = {}
    try:
        def web_up():
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=2).request("GET", "/api/schema")
                return True
            except OSError:
                return False

        wait_for(web_up, "gunicorn")
        from webapp.serving.protocol import redis_client, workers_alive

        for name, models in scenarios.items():
            worker = start([sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "infer", "-n",
                            f"bench-{name}@localhost", "--concurrency", "1", "--loglevel", "WARNING",
                            "--without-gossip", "--without-mingle"], env, folder / f"worker-{name}.log")
            try:
                wait_for(lambda: workers_alive(redis_client(), "infer") > 0, f"the worker for {name}")
                for model in models:  # warm-up: every model loaded once before timing
                    one_call(port, secret, model, 2, 0)
                results[name] = load(port, secret, models, args.clients, args.seconds, args.max_tokens)
                results[name]["peak_mb"] = max(peak_rss_mb(pid) for pid in pool_pids(worker))
            finally:
                stop(worker)
                redis_client().delete("serve:alive:infer")
            r = results[name]
            print(f"{name:11s} {r['requests_s']:6.2f} req/s  ttft p50 {r['ttft_p50'] * 1000:7.0f} ms  "
                  f"p95 {r['ttft_p95'] * 1000:7.0f} ms  {r['tokens_s']:7.1f} tok/s  worker peak {r['peak_mb']:6.0f} MB"
                  f"  ({r['requests']} requests, {len(r['errors'])} errors{': ' + r['errors'][0] if r['errors'] else ''})",
                  flush=True)
    finally:
        stop(web)
    eight, one, merged_r, plain = (results[k] for k in ("8-adapters", "1-adapter", "8-merged", "base"))
    print(f"8 adapters vs 1 adapter: {eight['tokens_s'] / one['tokens_s']:.2f}x tokens/s, "
          f"{eight['requests_s'] / one['requests_s']:.2f}x requests/s (goal >= 0.8x)")
    print(f"8 adapters vs one merged model per adapter: {eight['tokens_s'] / merged_r['tokens_s']:.2f}x tokens/s, "
          f"memory {eight['peak_mb']:.0f} MB vs {merged_r['peak_mb']:.0f} MB")
    print(f"worker peak memory, 8 adapters vs base alone: {eight['peak_mb']:.0f} MB vs {plain['peak_mb']:.0f} MB "
          f"(+{(eight['peak_mb'] / plain['peak_mb'] - 1) * 100:.1f} %; goal <= +10 %)")


if __name__ == "__main__":
    main()
