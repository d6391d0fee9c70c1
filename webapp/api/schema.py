"""The OpenAPI 3.1 description of the API (served at /api/schema) and the flattened view the reference page shows.

Written by hand so it says what the endpoints promise; tests/webapp/test_api_schema.py checks that every /api/
route and method is here and that live responses validate against it.
"""
from copy import deepcopy

from trainer.config import DTYPE_CHOICES, QUANTIZE_CHOICES
from webapp.jobs.priority import PRIORITIES
from webapp.results.playground import limits

VERSION = "1.0.0"


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict, required: tuple = (), description: str = "", extra: bool = True) -> dict:
    schema = {"type": "object", "properties": properties, "required": list(required)}
    if description:
        schema["description"] = description
    if not extra:
        schema["additionalProperties"] = False
    return schema


def page_of(item: str) -> dict:
    return obj({"items": {"type": "array", "items": ref(item)}, "count": {"type": "integer"},
                "next": nullable({"type": "string", "description": "URL of the next page"})},
               ("items", "count", "next"))


INT, NUM, STR, BOOL = {"type": "integer"}, {"type": "number"}, {"type": "string"}, {"type": "boolean"}
DATASET_STATES = ["validating", "ready", "invalid"]
JOB_STATES = ["validating", "queued", "running", "succeeded", "failed", "cancelled"]
TASKS = ["causal-lm", "classification"]
QUOTA_LIMITS = ("running_jobs", "queued_jobs", "gpu_hours", "storage")

SCHEMAS = {
    "Error": obj({"error": obj({"code": {"type": "string", "enum": [
        "invalid", "unauthorized", "not_found", "method_not_allowed", "conflict", "too_large", "rate_limited",
        "quota_exceeded", "server_error"]}, "message": STR,
        "field": {"type": "string", "description": "the input at fault"},
        "limit": {"type": "string", "enum": list(QUOTA_LIMITS),
                  "description": "quota_exceeded: the team quota reached (429: running_jobs, queued_jobs; 409: "
                                 "gpu_hours, storage)"}},
        ("code", "message"))}, ("error",)),
    "Me": obj({"user": STR, "team": obj({"id": INT, "name": STR}, ("id", "name")),
               "token": obj({"id": INT, "name": STR, "prefix": STR}, ("id", "name", "prefix")),
               "limits": obj({"max_upload_mb": {"type": "integer", "description": "MAX_UPLOAD_MB: the most a "
                                                "dataset file (and its eval file) may be"}}, ("max_upload_mb",))},
              ("user", "team", "token", "limits")),
    "Model": obj({
        "id": INT, "name": STR, "source": STR, "is_demo": BOOL,
        "status": {"type": "string", "enum": ["inspecting", "ready", "failed"]}, "error": nullable(STR),
        "architecture": STR, "model_type": STR, "task_types": {"type": "array", "items": STR},
        "total_params": nullable(INT), "size_bytes": nullable(INT), "has_chat_template": nullable(BOOL)},
        ("id", "name", "source", "is_demo", "status", "task_types")),
    "RowError": obj({"row": nullable(INT), "field": nullable(STR), "message": STR,
                     "file": nullable({"type": "string", "enum": ["train", "eval"],
                                       "description": "which file the row is in"})}, ("row", "message")),
    "Dataset": obj({
        "id": INT, "name": STR, "status": {"type": "string", "enum": DATASET_STATES},
        "format": nullable(STR), "task": nullable(STR), "rows": nullable(INT),
        "errors": {"type": "array", "items": ref("RowError")},
        "stats": {"type": "object", "description": "token-length statistics and label counts from validation"},
        "original_filename": STR, "size_bytes": nullable(INT), "column_mapping": {"type": "object"},
        "error": nullable(STR), "created_at": STR,
        "good_rows": INT, "bad_rows": INT,
        "needs_confirmation": {"type": "boolean", "description": "more than 20 % of the rows have problems: it trains "
                                                                 "only after POST .../confirm-rows"}},
        ("id", "name", "status", "format", "task", "rows", "errors", "stats")),
    "Created": obj({"id": INT, "status": STR}, ("id", "status")),
    "LoraSettings": obj({
        "rank": {"type": "integer", "minimum": 1, "maximum": 1024}, "alpha": {"type": "number", "exclusiveMinimum": 0},
        "dropout": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
        "targets": {"type": "string", "description": 'a preset ("attention", "attention+mlp", "all-linear"), '
                                                    'comma-separated module suffixes, or "re:<regex>"'},
        "rslora": BOOL}, extra=False),
    "TrainingSettings": obj({
        "epochs": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000},
        "max_steps": nullable({"type": "integer", "minimum": 1, "description": "overrides epochs"}),
        "lr": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "batch_size": {"type": "integer", "minimum": 1, "maximum": 4096},
        "grad_accum": {"type": "integer", "minimum": 1, "maximum": 1024},
        "max_length": {"type": "integer", "minimum": 8, "maximum": 32768},
        "warmup": {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "description": "fraction of steps"},
        "eval_fraction": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
        "seed": {"type": "integer", "minimum": 0, "maximum": 4294967295},
        "merge": {"type": "boolean", "description": "also export the merged model"},
        "method": {"type": "string", "enum": ["sft", "dpo"],
                   "description": "sft learns the answers; dpo prefers chosen over rejected answers (preference data)"},
        "eval_every": {"type": "integer", "minimum": 0, "description": "steps between periodic evals; 0: none"},
        "keep": {"type": "string", "enum": ["auto", "best", "last"],
                 "description": "the adapter saved: the best periodic eval's or the last step's"},
        "early_stopping_patience": {"type": "integer", "minimum": 0, "maximum": 10000,
                                    "description": "stop after N periodic evals without improvement; 0: never"},
        "beta": {"type": "number", "exclusiveMinimum": 0, "maximum": 100,
                 "description": "dpo: how close the tuned model stays to its base (higher: closer)"},
        "rpo_alpha": {"type": "number", "minimum": 0, "maximum": 100,
                      "description": "dpo: weight of an SFT term on the chosen answers (TRL's rpo_alpha); 0: plain DPO"},
        "gradient_checkpointing": {"type": "boolean", "description": "recompute activations in the backward "
                                                                     "pass: less memory, more compute"},
        "quantize": {"type": "string", "enum": list(QUANTIZE_CHOICES),
                     "description": "store the frozen base in 4-bit NF4 (QLoRA) or int8 through bitsandbytes"},
        "dtype": {"type": "string", "enum": list(DTYPE_CHOICES),
                  "description": "the base's weight dtype; auto: bf16 on GPUs that have it, else fp16, fp32 on "
                                 "CPU"}}, extra=False),
    "JobCreate": obj({
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "base_model": {"oneOf": [INT, STR], "description": "catalog id, or its source name such as demo/tiny-lm"},
        "dataset": INT, "eval_dataset": nullable(INT),
        "start_from": nullable({"type": "integer", "description": "a succeeded job of your team on the same base "
                                                                 "model and task: continue training its adapter"}),
        "task": {"type": "string", "enum": TASKS},
        "worker_class": {"type": "string", "description": "run it on a worker of this class (such as gpu-large): "
                                                          "one a live worker serves; empty or absent: any "
                                                          "training worker"},
        "priority": {"type": "string", "enum": list(PRIORITIES),
                     "description": "which of the team's waiting jobs starts first; default normal"},
        "lora": ref("LoraSettings"), "training": ref("TrainingSettings"),
        "defaults": {"type": "string", "enum": ["engine", "advised"],
                     "description": "what settings left out take: the engine's defaults (engine, the default), or "
                                    "the settings advisor's proposal for this model, dataset and worker class "
                                    "(advised: epochs, lr, rank, alpha, targets, batch_size, max_length), as the "
                                    "job form starts from"}},
        ("name", "base_model", "dataset"), extra=False),
    "Progress": obj({"step": nullable(INT), "total_steps": nullable(INT), "loss": nullable(NUM),
                     "tokens_per_s": nullable(NUM), "eta_s": nullable(NUM)},
                    ("step", "total_steps", "loss", "tokens_per_s", "eta_s")),
    "Params": obj({"trainable": nullable(INT), "total": nullable(INT), "adapter_bytes": nullable(INT)},
                  ("trainable", "total", "adapter_bytes")),
    "Job": obj({
        "id": INT, "name": STR, "status": {"type": "string", "enum": JOB_STATES},
        "base_model": INT, "dataset": INT, "eval_dataset": nullable(INT),
        "start_from": nullable({"type": "integer", "description": "the job whose adapter this one continued"}),
        "task": STR,
        "worker_class": nullable({"type": "string", "description": "the class it asked for; null: any worker"}),
        "worker_name": nullable({"type": "string", "description": "the worker that ran (or runs) it"}),
        "priority": {"type": "string", "enum": list(PRIORITIES)},
        "gpus": {"type": "integer", "minimum": 1, "description": "GPUs its worker gives it"},
        "gpu_seconds": {"type": "number", "minimum": 0, "description": "worker seconds × gpus so far"},
        "queue_position": nullable({"type": "integer", "minimum": 1, "description": "a queued job's place in its "
                                    "worker class's queue (1: next); null unless queued. Only on GET "
                                    "/api/jobs/{job_id}"}),
        "settings": {"type": "object", "description": "the job's lora and training settings"},
        "progress": ref("Progress"), "params": ref("Params"),
        "base_eval": nullable({"type": "object"}), "final_eval": nullable({"type": "object"}),
        "error": nullable(STR), "has_merged": BOOL, "created_at": STR, "queued_at": nullable(STR),
        "started_at": nullable(STR), "finished_at": nullable(STR),
        "worker_silent_since": nullable({"type": "string", "description": "a running job whose worker sent no "
                                         "heartbeat for JOB_HEARTBEAT_TIMEOUT_S: its last heartbeat; else null"})},
        ("id", "name", "status", "progress", "params", "base_eval", "final_eval", "error")),
    "Event": obj({"id": INT, "at": STR, "kind": {"type": "string", "enum": ["state", "log"],
                                                  "description": "state: a state change; log: a worker log line"},
                  "from_state": nullable(STR), "to_state": nullable(STR),
                  "message": {"type": "string", "description": "the change and its reason, or the log line"}},
                 ("id", "at", "kind", "message")),
    "EventPage": obj({"items": {"type": "array", "items": ref("Event")},
                      "next_after": {"type": "integer", "description": "pass back as ?after= for newer events"},
                      "status": {"type": "string", "enum": JOB_STATES},
                      "log": {"type": "array", "items": STR,
                              "description": "the latest log lines (up to 50) as the worker streams them live"}},
                     ("items", "next_after", "status", "log"),
                     "State changes and stored log lines, oldest first, after the `after` cursor; and the live "
                     "log's latest lines."),
    "CancelResult": obj({"id": INT, "status": {"type": "string", "enum": JOB_STATES},
                         "outcome": {"type": "string", "enum": ["cancelled", "stopping"],
                                     "description": "stopping: a running job stops at its next step"}},
                        ("id", "status", "outcome")),
    "Metrics": obj({"metrics": {"type": "object", "description": "the trainer's metrics.json"},
                    "history": {"type": "array", "items": {"type": "object"}}}, ("metrics", "history")),
    "PlaygroundRequest": obj({
        "prompt": {"type": "string", "maxLength": 20000, "description": "causal-lm jobs"},
        "text": {"type": "string", "maxLength": 20000, "description": "classification jobs"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0.01, "maximum": 1},
        "max_new_tokens": {"type": "integer", "minimum": 1, "maximum": 2048},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2147483647,
                 "description": "omit for a fresh one; /v1 with the same seed gives the same answer"}}, extra=False),
    "PlaygroundResult": obj({"base": {}, "tuned": {}}, ("base", "tuned"),
                            "Generated text (causal-lm) or {label, scores} (classification) from each model."),
}
SCHEMAS["ModelPage"], SCHEMAS["DatasetPage"], SCHEMAS["JobPage"] = (
    page_of("Model"), page_of("Dataset"), page_of("Job"))

ERRORS = {
    400: "Invalid input; `field` names it.",
    401: "Missing, unknown or revoked token.",
    404: "No such object in the token's team.",
    405: "Method not allowed.",
    409: "The object's state does not allow this (e.g. cancelling a finished job).",
    413: "Upload or body too large.",
    429: "Rate limit reached; see Retry-After.",
}
QUOTA_REFUSALS = ("A team quota refuses it with code quota_exceeded and `limit`: 429 for running_jobs and "
                  "queued_jobs (try again once jobs have finished or started), 409 for gpu_hours and storage (a "
                  "hard quota: the month must turn, files be deleted or an admin raise it).")


def op(summary: str, tag: str, ok: dict, errors=(401,), body: dict | None = None, params=(), description="",
       public=False) -> dict:
    operation = {"summary": summary, "tags": [tag], "responses": dict(ok)}
    if description:
        operation["description"] = description
    for status in errors:
        operation["responses"][str(status)] = {"description": ERRORS[status],
                                               "content": {"application/json": {"schema": ref("Error")}}}
    if body:
        operation["requestBody"] = {"required": True, "content": body}
    if params:
        operation["parameters"] = list(params)
    if public:
        operation["security"] = []
    return operation


def json_ok(schema_name: str, status: int = 200, description: str = "OK") -> dict:
    return {str(status): {"description": description, "content": {"application/json": {"schema": ref(schema_name)}}}}


def zip_ok(what: str) -> dict:
    return {"200": {"description": f"The {what} as a zip file.", "content": {
        "application/zip": {"schema": {"type": "string", "format": "binary"}}}}}


def path_id(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}


def query_int(name: str, description: str, minimum: int = 0, maximum: int | None = None) -> dict:
    schema = {"type": "integer", "minimum": minimum}
    if maximum is not None:
        schema["maximum"] = maximum
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


PAGE = (query_int("limit", "items per page (default 50)", 1, 200),
        query_int("offset", "items to skip", 0, 10**9))
JOB = path_id("job_id")
JSON_BODY = lambda name: {"application/json": {"schema": ref(name)}}  # noqa: E731

PATHS = {
    "/api/me": {"get": op("Who this token acts as", "Tokens", json_ok("Me"))},
    "/api/models": {"get": op("List base models", "Models", json_ok("ModelPage"), (400, 401), params=PAGE)},
    "/api/models/{model_id}": {"get": op("One base model", "Models", json_ok("Model"), (401, 404),
                                         params=[path_id("model_id")])},
    "/api/datasets": {
        "get": op("List the team's datasets", "Datasets", json_ok("DatasetPage"), (400, 401), params=PAGE),
        "post": op("Upload a dataset", "Datasets", json_ok("Created", 201, "Stored; validation runs in the background."),
                   (400, 401, 409, 413), body={"multipart/form-data": {"schema": obj({
                       "name": {"type": "string", "maxLength": 200,
                                "description": "shown in lists; default: the file's name"},
                       "file": {"type": "string", "format": "binary",
                                "description": "JSONL, JSON array or CSV in UTF-8, optionally gzip-compressed (.gz); "
                                               "chat, instruction, prompt/completion, text or text/label rows"},
                       "eval_file": {"type": "string", "format": "binary",
                                     "description": "held-out rows in the same format; without one, jobs split off "
                                                    "a part"},
                       "column_mapping": {"type": "string", "description": 'JSON object {"field": "column"}; '
                                                                           "each column to one field"}},
                       ("file",), extra=False)}},
                   description="Each file may be up to MAX_UPLOAD_MB (see GET /api/me); a larger one is refused "
                               "with 413 while it streams, or at once when the Content-Length already says so. "
                               "Poll GET /api/datasets/{dataset_id} until status is ready or invalid. 409 "
                               "(code quota_exceeded, limit storage) when the files would pass the team's storage "
                               "quota.")},
    "/api/datasets/{dataset_id}": {
        "get": op("One dataset and its validation report", "Datasets", json_ok("Dataset"), (401, 404),
                  params=[path_id("dataset_id")]),
        "delete": op("Delete a dataset", "Datasets", {"204": {"description": "Deleted."}}, (401, 404, 409),
                     params=[path_id("dataset_id")], description="409 while a job still uses it.")},
    "/api/datasets/{dataset_id}/confirm-rows": {
        "post": op("Confirm training on the good rows", "Datasets", json_ok("Dataset"), (401, 404, 409),
                   params=[path_id("dataset_id")],
                   description="A ready dataset where more than 20 % of the rows have problems (usually a column "
                               "mapping or export mistake) trains only after this; validating it again clears it. "
                               "409 while it is not ready.")},
    "/api/jobs": {
        "get": op("List the team's jobs", "Jobs", json_ok("JobPage"), (400, 401), params=PAGE),
        "post": op("Create a job", "Jobs", json_ok("Created", 201, "Created; it starts once its dataset is ready."),
                   (400, 401, 404, 409, 413, 429), body=JSON_BODY("JobCreate"),
                   description="Settings are checked with the same rules as the page (and the trainer). "
                               + QUOTA_REFUSALS)},
    "/api/jobs/{job_id}": {
        "get": op("One job with its progress and evaluation", "Jobs", json_ok("Job"), (401, 404), params=[JOB]),
        "delete": op("Delete a job and its files", "Jobs", {"204": {"description": "Deleted, with its artifacts."}},
                     (401, 404, 409), params=[JOB],
                     description="A waiting job is cancelled first. A running job is asked to stop and the answer "
                                 "is 409: delete it again once its status is cancelled.")},
    "/api/jobs/{job_id}/events": {"get": op(
        "The job's state changes and log lines", "Jobs", json_ok("EventPage"), (400, 401, 404),
        params=[JOB, query_int("after", "only events with a larger id", 0, 2**62),
                    query_int("limit", "at most", 1, 500)])},
    "/api/jobs/{job_id}/cancel": {"post": op("Cancel a job", "Jobs", json_ok("CancelResult"), (401, 404, 409),
                                             params=[JOB])},
    "/api/jobs/{job_id}/adapter": {"get": op("Download the LoRA adapter (PEFT layout)", "Results", zip_ok("adapter"),
                                             (401, 404, 409), params=[JOB])},
    "/api/jobs/{job_id}/merged": {"get": op("Download the merged model", "Results", zip_ok("merged model"),
                                            (401, 404, 409), params=[JOB])},
    "/api/jobs/{job_id}/metrics": {"get": op("Training history and evaluation metrics", "Results",
                                             json_ok("Metrics"), (401, 404), params=[JOB])},
    "/api/jobs/{job_id}/playground": {"post": op(
        "Run the base and the fine-tuned model on the same input", "Results", json_ok("PlaygroundResult"),
        (400, 401, 404, 409, 413, 429), body=JSON_BODY("PlaygroundRequest"), params=[JOB],
        description="Same sampling settings for both; 409 until the job has succeeded.")},
    "/api/schema": {"get": op("This OpenAPI document", "Reference", {"200": {
        "description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}}, (),
        public=True)},
    "/api/docs": {"get": op("The rendered API reference", "Reference", {"200": {
        "description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}}, (), public=True)},
}


def schema(server_url: str | None = None) -> dict:
    document = {
        "openapi": "3.1.0",
        "info": {"title": "Loraworks API", "version": VERSION,
                 "description": "Script what the pages do: upload datasets, start and watch LoRA fine-tuning jobs, "
                                "download adapters and merged models, try them in the playground. Every call acts "
                                "for one team, the one its token was created for."},
        "paths": deepcopy(PATHS),
        "components": {"schemas": deepcopy(SCHEMAS),
                       "securitySchemes": {"token": {"type": "http", "scheme": "bearer",
                                                     "description": "An API token from Settings › API tokens"}}},
        "security": [{"token": []}],
    }
    playground = document["components"]["schemas"]["PlaygroundRequest"]["properties"]
    bounds = limits()
    playground["max_new_tokens"]["maximum"] = bounds["max_new_tokens"]
    for name in ("prompt", "text"):
        playground[name]["maxLength"] = bounds["max_prompt_chars"]
    if server_url:
        document["servers"] = [{"url": server_url.rstrip("/")}]
    return document


def reference_sections() -> list[dict]:
    """The schema as the reference page lists it: tags, each with its operations and flattened fields."""
    sections: dict[str, list] = {}
    for path, operations in PATHS.items():
        for method, operation in operations.items():
            body = operation.get("requestBody", {}).get("content", {})
            body_type, body_schema = next(iter(body.items()), (None, {}))
            sections.setdefault(operation["tags"][0], []).append({
                "method": method.upper(), "path": path, "summary": operation["summary"],
                "description": operation.get("description", ""), "public": operation.get("security") == [],
                "params": operation.get("parameters", []), "body_type": body_type,
                "body_fields": fields_of(body_schema.get("schema", {})),
                "responses": [{"status": status, "description": response["description"],
                               "fields": fields_of(next(iter(response.get("content", {}).values()), {})
                                                   .get("schema", {}))}
                              for status, response in operation["responses"].items()],
            })
    return [{"tag": tag, "operations": ops} for tag, ops in sections.items()]


def fields_of(schema: dict, prefix: str = "", depth: int = 0) -> list[dict]:
    """Flatten an object schema into rows {name, type, required, description}, following $refs a few levels."""
    schema = resolve(schema)
    if depth > 3 or schema.get("type") != "object":
        return []
    rows = []
    required = set(schema.get("required", []))
    for name, sub in schema.get("properties", {}).items():
        sub = resolve(sub)
        full = f"{prefix}{name}"
        rows.append({"name": full, "type": type_name(sub), "required": name in required,
                     "description": sub.get("description", "")})
        items = resolve(sub.get("items", {})) if sub.get("type") == "array" else sub
        rows.extend(fields_of(items, f"{full}{'[].' if sub.get('type') == 'array' else '.'}", depth + 1))
    return rows


def resolve(schema: dict) -> dict:
    if "$ref" in schema:
        return SCHEMAS[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def type_name(schema: dict) -> str:
    if "enum" in schema:
        return " | ".join(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            names = [type_name(resolve(s)) for s in schema[key]]
            return " | ".join(n for n in names if n != "null") + (" or null" if "null" in names else "")
    if schema.get("type") == "array":
        return f"array of {type_name(resolve(schema.get('items', {})))}"
    return schema.get("format") or schema.get("type") or "any"
