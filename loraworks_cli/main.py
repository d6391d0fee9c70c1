"""The `loraworks` command line: log in to a server, upload datasets, create, watch, cancel and download jobs,
and try a fine-tuned model in the playground.

Results go to stdout (ids alone, so `ID=$(loraworks jobs create …)` works; `--json` prints the API's JSON);
progress and messages go to stderr. Exit codes: 0 ok, 1 the job failed or was cancelled (or a dataset is
invalid), 2 invalid input, 3 not logged in or token refused, 4 not found, 5 state conflict, 6 rate limited,
7 too large, 8 server unreachable or server error.
"""
from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from pathlib import Path

from loraworks_cli import config
from loraworks_cli.client import EXIT_CODES, Client, ClientError
from loraworks_cli.progress import Bar, describe

TERMINAL_JOB = ("succeeded", "failed", "cancelled")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except ClientError as error:
        where = f" [{error.field}]" if error.field else ""
        print(f"loraworks: error: {error.message}{where}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("loraworks: interrupted", file=sys.stderr)
        return 130


def client() -> Client:
    settings = config.load()
    if not settings.get("url") or not settings.get("token"):
        raise ClientError("not logged in: run `loraworks login URL` first", EXIT_CODES["unauthorized"])
    return Client(settings["url"], settings["token"])


def output(args, data, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


# --- login -----------------------------------------------------------------------------------------------------

def cmd_login(args):
    token = args.token or os.environ.get("LORAWORKS_TOKEN")
    if not token:
        token = getpass.getpass("API token (Settings › API tokens): ") if sys.stdin.isatty() \
            else sys.stdin.readline()
    token = token.strip()
    if not token:
        raise ClientError("no token given", EXIT_CODES["invalid"])
    url = args.url.rstrip("/")
    me = Client(url, token).get("/api/me")
    path = config.save({"url": url, "token": token})
    print(f"Logged in to {url} as {me['user']} (team {me['team']['name']}); saved to {path}", file=sys.stderr)


def cmd_logout(args):
    print("Logged out." if config.forget() else "Was not logged in.", file=sys.stderr)


def cmd_whoami(args):
    me = client().get("/api/me")
    output(args, me, f"{me['user']} in team {me['team']['name']} (token {me['token']['name']})")


# --- models and datasets ---------------------------------------------------------------------------------------

def cmd_models(args):
    page = client().get("/api/models", limit=200)
    lines = [f"{m['id']:>4}  {m['source']:<40} {m['status']:<10} {', '.join(m['task_types'])}" for m in page["items"]]
    output(args, page, "\n".join(lines))


def cmd_dataset_upload(args):
    fields = {"name": args.name} if args.name else {}
    if args.map:
        if not all("=" in pair for pair in args.map):
            raise ClientError("--map takes FIELD=COLUMN, e.g. --map prompt=question", EXIT_CODES["invalid"])
        fields["column_mapping"] = json.dumps(dict(pair.split("=", 1) for pair in args.map))
    files = {"file": Path(args.file)}
    if args.eval_file:
        files["eval_file"] = Path(args.eval_file)
    for path in files.values():
        if not path.is_file():
            raise ClientError(f"no such file: {path}", EXIT_CODES["invalid"])
    api = client()
    created = api.upload("/api/datasets", fields, files)
    if not args.wait:
        output(args, created, str(created["id"]))
        return 0
    print(f"Uploaded dataset {created['id']}; validating…", file=sys.stderr)
    dataset = created
    while dataset["status"] == "validating":
        time.sleep(args.interval)
        dataset = api.get(f"/api/datasets/{created['id']}")
    output(args, dataset, str(dataset["id"]))
    return report_dataset(dataset)


def report_dataset(dataset: dict) -> int:
    if dataset["status"] == "ready":
        print(f"Dataset {dataset['id']} is ready: {dataset['rows']} rows, {dataset['format']}.", file=sys.stderr)
        return 0
    print(f"Dataset {dataset['id']} is invalid: {dataset.get('error') or ''}", file=sys.stderr)
    for problem in dataset.get("errors", [])[:10]:
        print(f"  row {problem['row']}: {problem.get('field') or ''} {problem['message']}", file=sys.stderr)
    return EXIT_CODES["job_failed"]


def cmd_dataset_list(args):
    page = client().get("/api/datasets", limit=200)
    lines = [f"{d['id']:>5}  {d['status']:<10} {d['rows'] if d['rows'] is not None else '-':>8}  {d['name']}"
             for d in page["items"]]
    output(args, page, "\n".join(lines))


def cmd_dataset_show(args):
    dataset = client().get(f"/api/datasets/{args.id}")
    output(args, dataset, f"{dataset['id']}  {dataset['name']}  {dataset['status']}  rows={dataset['rows']}  "
                          f"format={dataset['format']}  task={dataset['task']}")


def cmd_dataset_delete(args):
    client().delete(f"/api/datasets/{args.id}")
    print(f"Deleted dataset {args.id}.", file=sys.stderr)


# --- jobs -------------------------------------------------------------------------------------------------------

LORA_OPTIONS = ("rank", "alpha", "dropout", "targets", "rslora")
TRAINING_OPTIONS = ("epochs", "max_steps", "lr", "batch_size", "grad_accum", "max_length", "warmup",
                    "eval_fraction", "seed", "merge", "quantize", "dtype")


def cmd_job_create(args):
    body = {"name": args.name or f"{args.model} on dataset {args.dataset}",
            "base_model": int(args.model) if args.model.isdigit() else args.model, "dataset": args.dataset}
    if args.eval_dataset:
        body["eval_dataset"] = args.eval_dataset
    if args.start_from:
        body["start_from"] = args.start_from
    if args.task:
        body["task"] = args.task
    if args.worker_class:
        body["worker_class"] = args.worker_class
    lora = {k: getattr(args, k) for k in LORA_OPTIONS if getattr(args, k) is not None}
    training = {k: getattr(args, k) for k in TRAINING_OPTIONS if getattr(args, k) is not None}
    if lora:
        body["lora"] = lora
    if training:
        body["training"] = training
    created = client().post("/api/jobs", body)
    output(args, created, str(created["id"]))


def cmd_job_list(args):
    page = client().get("/api/jobs", limit=200)
    lines = [f"{j['id']:>5}  {j['status']:<10} {j['name']}" for j in page["items"]]
    output(args, page, "\n".join(lines))


def cmd_job_show(args):
    job = client().get(f"/api/jobs/{args.id}")
    output(args, job, describe(job) + (f"\nerror: {job['error']}" if job.get("error") else ""))


def cmd_job_watch(args):
    """Follow a job until it ends; exit 0 if it succeeded, 1 if it failed or was cancelled."""
    api, bar = client(), Bar()
    after = 0
    try:
        while True:
            events = api.get(f"/api/jobs/{args.id}/events", after=after)
            for event in events["items"]:
                bar.note(event_line(event))
            after = events["next_after"] or after
            job = api.get(f"/api/jobs/{args.id}")
            bar.show(describe(job))
            if job["status"] in TERMINAL_JOB:
                break
            time.sleep(args.interval)
    finally:
        bar.close()
    output(args, job, f"{job['id']} {job['status']}")
    if job["status"] != "succeeded":
        print(f"Job {job['id']} {job['status']}: {job.get('error') or ''}", file=sys.stderr)
        return EXIT_CODES["job_failed"]
    return 0


def cmd_job_cancel(args):
    result = client().post(f"/api/jobs/{args.id}/cancel")
    output(args, result, f"{result['id']} {result['status']}")


def event_line(event: dict) -> str:
    """A state change with its date and time; a log line as the worker stamped it (time of day), indented."""
    return f"    {event['message']}" if event["kind"] == "log" else f"{event['at'][:19]}  {event['message']}"


def cmd_job_events(args):
    page = client().get(f"/api/jobs/{args.id}/events", after=args.after)
    output(args, page, "\n".join(event_line(e) for e in page["items"]))


def cmd_job_download(args):
    kind = "merged" if args.merged else "adapter"
    target = Path(args.output or f"job-{args.id}-{kind}.zip")
    size = client().download(f"/api/jobs/{args.id}/{kind}", target)
    print(f"Saved the {kind} of job {args.id} to {target} ({size} bytes).", file=sys.stderr)
    output(args, {"path": str(target), "bytes": size}, str(target))


def cmd_playground(args):
    body = {"temperature": args.temperature, "top_p": args.top_p, "max_new_tokens": args.max_new_tokens}
    body = {k: v for k, v in body.items() if v is not None}
    body["text" if args.classify else "prompt"] = args.prompt
    result = client().post(f"/api/jobs/{args.id}/playground", body)
    output(args, result, f"--- base ---\n{show(result['base'])}\n--- fine-tuned ---\n{show(result['tuned'])}")


def show(answer) -> str:
    return answer if isinstance(answer, str) else json.dumps(answer)


# --- argument parsing -------------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the API's JSON instead of text")
    top = argparse.ArgumentParser(prog="loraworks", description=__doc__.split("\n\n")[0],
                                  formatter_class=argparse.RawDescriptionHelpFormatter,
                                  epilog=__doc__.split("\n\n", 1)[1])
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    login = commands.add_parser("login", help="save a server URL and an API token", parents=[common])
    login.add_argument("url")
    login.add_argument("--token", help="default: $LORAWORKS_TOKEN, else asked for (or read from stdin)")
    login.set_defaults(run=cmd_login)
    commands.add_parser("logout", help="forget the saved token", parents=[common]).set_defaults(run=cmd_logout)
    commands.add_parser("whoami", help="who the token acts as", parents=[common]).set_defaults(run=cmd_whoami)
    commands.add_parser("models", help="list base models", parents=[common]).set_defaults(run=cmd_models)

    datasets = commands.add_parser("datasets", help="upload and manage datasets").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    upload = datasets.add_parser("upload", help="upload a file; prints its id", parents=[common])
    upload.add_argument("file")
    upload.add_argument("--name")
    upload.add_argument("--eval-file")
    upload.add_argument("--map", action="append", metavar="FIELD=COLUMN", help="column mapping, repeatable")
    upload.add_argument("--wait", action="store_true", help="wait for validation; exit 1 if invalid")
    upload.add_argument("--interval", type=float, default=1.0)
    upload.set_defaults(run=cmd_dataset_upload)
    datasets.add_parser("list", parents=[common]).set_defaults(run=cmd_dataset_list)
    for name, run in (("show", cmd_dataset_show), ("delete", cmd_dataset_delete)):
        sub = datasets.add_parser(name, parents=[common])
        sub.add_argument("id", type=int)
        sub.set_defaults(run=run)

    jobs = commands.add_parser("jobs", help="create, follow and download jobs").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    create = jobs.add_parser("create", help="create a job; prints its id", parents=[common])
    create.add_argument("--model", required=True, help="catalog id or source name, e.g. demo/tiny-lm")
    create.add_argument("--dataset", required=True, type=int)
    create.add_argument("--eval-dataset", type=int)
    create.add_argument("--start-from", type=int, metavar="JOB",
                        help="continue the adapter of this succeeded job (same base model and task)")
    create.add_argument("--name")
    create.add_argument("--task", choices=["causal-lm", "classification"])
    create.add_argument("--worker-class", help="run on a worker of this class (a queue train.CLASS some live "
                                               "worker serves); default: any training worker")
    create.add_argument("--rank", type=int)
    create.add_argument("--alpha", type=float)
    create.add_argument("--dropout", type=float)
    create.add_argument("--targets")
    create.add_argument("--rslora", action="store_true", default=None)
    create.add_argument("--epochs", type=float)
    create.add_argument("--max-steps", type=int)
    create.add_argument("--lr", type=float)
    create.add_argument("--batch-size", type=int)
    create.add_argument("--grad-accum", type=int)
    create.add_argument("--max-length", type=int)
    create.add_argument("--warmup", type=float)
    create.add_argument("--eval-fraction", type=float)
    create.add_argument("--seed", type=int)
    create.add_argument("--merge", action="store_true", default=None, help="also build the merged model")
    # Choices are the server's to check (its error names the setting), so this client stays in step with it.
    create.add_argument("--quantize", help="none | nf4 | int8: store the frozen base in 4 or 8 bits")
    create.add_argument("--dtype", help="auto | fp32 | bf16 | fp16: the base's weight and compute dtype")
    create.set_defaults(run=cmd_job_create)
    jobs.add_parser("list", parents=[common]).set_defaults(run=cmd_job_list)
    for name, run, text in (("show", cmd_job_show, "one job's state"),
                            ("watch", cmd_job_watch, "follow until it ends; exit 1 unless it succeeded"),
                            ("cancel", cmd_job_cancel, "cancel a job"),
                            ("events", cmd_job_events, "state changes and log lines")):
        sub = jobs.add_parser(name, help=text, parents=[common])
        sub.add_argument("id", type=int)
        sub.set_defaults(run=run)
        if name == "watch":
            sub.add_argument("--interval", type=float, default=2.0, help="seconds between polls")
        if name == "events":
            sub.add_argument("--after", type=int, default=0)
    download = jobs.add_parser("download", help="download the adapter or merged model zip", parents=[common])
    download.add_argument("id", type=int)
    which = download.add_mutually_exclusive_group(required=True)
    which.add_argument("--adapter", action="store_true")
    which.add_argument("--merged", action="store_true")
    download.add_argument("-o", "--output", help="file to write (default job-ID-KIND.zip)")
    download.set_defaults(run=cmd_job_download)

    playground = commands.add_parser("playground", help="base vs fine-tuned on one input", parents=[common])
    playground.add_argument("id", type=int)
    playground.add_argument("prompt")
    playground.add_argument("--classify", action="store_true", help="send as `text` (classification jobs)")
    playground.add_argument("--temperature", type=float)
    playground.add_argument("--top-p", type=float)
    playground.add_argument("--max-new-tokens", type=int)
    playground.set_defaults(run=cmd_playground)
    return top
