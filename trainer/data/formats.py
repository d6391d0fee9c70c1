"""The five dataset formats: how to recognise them, and how to turn a raw row into a canonical example.

| format              | fields in a row                                            | task           |
|---------------------|------------------------------------------------------------|----------------|
| `text`              | `text`                                                     | causal-lm      |
| `prompt_completion` | `prompt`, `completion`                                     | causal-lm      |
| `alpaca`            | `instruction`, optional `input`, `output`                  | causal-lm      |
| `chat`              | `messages` [{role, content}] (role system/user/assistant), | causal-lm      |
|                     | or ShareGPT `conversations` [{from, value}] (human/gpt/system) |            |
| `classification`    | `text`, `label` (text or a whole number)                   | classification |
| `preference`        | `prompt` or `messages`, `chosen`, `rejected`; or OpenAI's  | causal-lm      |
|                     | `input`, `preferred_output`, `non_preferred_output`        | (DPO; SFT: chosen) |

Canonical examples (what `normalize` returns and `render` consumes) use exactly those field names; chat examples
always carry `messages` with roles system/user/assistant, ShareGPT rows included. Labels become text ("1" for 1).
Preference rows are checked and shaped by `trainer.data.preference`.

A column mapping `{canonical field: column in the file}` renames a file's columns first, e.g.
`{"prompt": "question", "completion": "answer"}`. Problems name the file's own column, not the canonical one.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable

from trainer.errors import DataError
from trainer.data import preference
from trainer.data.reader import json_type

FORMATS = ("text", "prompt_completion", "alpaca", "chat", "classification", "preference")
TASKS = ("causal-lm", "classification")
# Most specific first: a classification row (text, label) also has a `text` field, a chat-shaped preference row
# has `messages`.
_DETECTION_ORDER = ("preference", "chat", "alpaca", "prompt_completion", "classification", "text")
_REQUIRED = {
    "text": ("text",),
    "prompt_completion": ("prompt", "completion"),
    "alpaca": ("instruction", "output"),
    "chat": ("messages",),
    "classification": ("text", "label"),
}
DESCRIPTIONS = {
    "text": "text (a `text` field)",
    "prompt_completion": "prompt/completion",
    "alpaca": "alpaca (instruction/input/output)",
    "chat": "chat (messages with role and content)",
    "classification": "classification (text/label)",
    "preference": "preference (prompt/chosen/rejected)",
}
CANONICAL_FIELDS = ("text", "label", "prompt", "completion", "instruction", "input", "output", "messages",
                    "conversations", "chosen", "rejected")
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}


def task_for_format(fmt: str) -> str:
    return "classification" if fmt == "classification" else "causal-lm"


def formats_for_task(task: str | None) -> tuple[str, ...]:
    if task is None:
        return _DETECTION_ORDER
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    return tuple(f for f in _DETECTION_ORDER if task_for_format(f) == task)


def check_mapping(mapping: dict[str, str] | None) -> dict[str, str]:
    mapping = dict(mapping or {})
    unknown = sorted(set(mapping) - set(CANONICAL_FIELDS))
    if unknown:
        raise DataError(f"column mapping names unknown fields {', '.join(unknown)}; "
                        f"map to {', '.join(CANONICAL_FIELDS)}")
    return mapping


def apply_mapping(row: dict, mapping: dict[str, str]) -> dict:
    """The row with each mapped column renamed to its canonical field."""
    if not mapping:
        return row
    renamed = {key: value for key, value in row.items() if key not in mapping.values()}
    for canonical, column in mapping.items():
        if column in row:
            renamed[canonical] = row[column]
    return renamed


def matching_formats(row: dict, allowed: Iterable[str] = _DETECTION_ORDER) -> list[str]:
    """Formats whose required fields the (mapped) row has, most specific first."""
    def has(fmt: str) -> bool:
        if fmt == "chat":
            return "messages" in row or "conversations" in row
        if fmt == "preference":
            return preference.is_preference_row(row)
        return all(name in row for name in _REQUIRED[fmt])
    return [fmt for fmt in allowed if has(fmt)]


def detect_format(rows: Iterable[dict], task: str | None = None) -> str:
    """The most common most-specific format among (mapped) rows, limited to formats that can train `task`."""
    allowed = formats_for_task(task)
    votes: Counter[str] = Counter()
    columns: Counter[str] = Counter()
    for row in rows:
        columns.update(row.keys())
        found = matching_formats(row, allowed)
        if found:
            votes[found[0]] += 1
    if votes:
        return votes.most_common(1)[0][0]
    seen = ", ".join(name for name, _ in columns.most_common(12)) or "none"
    wanted = "; ".join(DESCRIPTIONS[f] for f in allowed)
    raise DataError(f"could not recognise the dataset format: the rows have the fields {seen}. Expected one of: "
                    f"{wanted}. Rename the columns or give a column mapping")


def normalize(row: dict, fmt: str, mapping: dict[str, str] | None = None) -> tuple[dict | None, list[tuple]]:
    """(canonical example, []) for a good row, else (None, [(field, message), ...]) with the file's column names."""
    mapping = mapping or {}
    name = lambda field: mapping.get(field, field)  # noqa: E731 - the file's own column name
    if fmt == "preference":
        if not preference.is_preference_row(row):
            return None, [(None, "this row has no 'chosen' and 'rejected' answers (or 'preferred_output' and "
                                 "'non_preferred_output'): every row of a preference file needs both")]
        return preference.normalize_preference(row, name)
    missing = [field for field in _REQUIRED[fmt] if field not in row and not (fmt == "chat" and "conversations" in row)]
    if missing:
        others = [f for f in matching_formats(row) if f != fmt and task_for_format(f) == task_for_format(fmt)]
        if others:
            return None, [(None, f"this row is in {DESCRIPTIONS[others[0]]} format but the file is "
                                 f"{DESCRIPTIONS[fmt]}: mixed formats")]
        return None, [(name(field), f"missing field '{name(field)}'") for field in missing]
    return _NORMALIZERS[fmt](row, name)


def _text(row: dict, field: str, name, *, required: bool = True) -> tuple[str | None, tuple | None]:
    value = row.get(field)
    if value is None and not required:
        return "", None
    if not isinstance(value, str):
        return None, (name(field), f"'{name(field)}' must be text, got {json_type(value)}")
    if required and not value.strip():
        return None, (name(field), f"'{name(field)}' is empty")
    return value, None


def _fields(row: dict, name, required: tuple[str, ...], optional: tuple[str, ...] = ()):
    example, problems = {}, []
    for field in required + optional:
        value, problem = _text(row, field, name, required=field in required)
        example[field] = value
        if problem:
            problems.append(problem)
    return (None, problems) if problems else (example, [])


def _normalize_classification(row: dict, name):
    text, problem = _text(row, "text", name)
    label = row.get("label")
    if isinstance(label, int) and not isinstance(label, bool):
        label = str(label)
    problems = [problem] if problem else []
    if not isinstance(label, str):
        problems.append((name("label"), f"'{name('label')}' must be text or a whole number, got {json_type(label)}"))
    elif not label.strip():
        problems.append((name("label"), f"'{name('label')}' is empty"))
    return (None, problems) if problems else ({"text": text, "label": label.strip()}, [])


def _normalize_chat(row: dict, name):
    sharegpt = "messages" not in row
    field = name("conversations" if sharegpt else "messages")
    role_key, content_key = ("from", "value") if sharegpt else ("role", "content")
    turns = row.get("conversations" if sharegpt else "messages")
    if not isinstance(turns, list):
        return None, [(field, f"'{field}' must be a list of messages, got {json_type(turns)}")]
    if not turns:
        return None, [(field, f"'{field}' has no messages")]
    messages, problems = [], []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            problems.append((f"{field}[{i}]", f"message {i + 1} must be an object with '{role_key}' and "
                                              f"'{content_key}', got {json_type(turn)}"))
            continue
        role, content = turn.get(role_key), turn.get(content_key)
        role = SHAREGPT_ROLES.get(role) if sharegpt else role
        if role not in ROLES:
            allowed = "human, gpt or system" if sharegpt else "system, user or assistant"
            problems.append((f"{field}[{i}].{role_key}", f"message {i + 1} has unknown role "
                                                         f"{turn.get(role_key)!r}; use {allowed}"))
        elif not isinstance(content, str):
            problems.append((f"{field}[{i}].{content_key}", f"message {i + 1}: '{content_key}' must be text, "
                                                            f"got {json_type(content)}"))
        elif role == "assistant" and not content.strip():
            problems.append((f"{field}[{i}].{content_key}", f"message {i + 1}: the assistant's reply is empty"))
        else:
            messages.append({"role": role, "content": content})
    if not problems and not any(m["role"] == "assistant" for m in messages):
        problems.append((field, "no assistant message: there is no reply for the model to learn"))
    return (None, problems) if problems else ({"messages": messages}, [])


_NORMALIZERS = {
    "text": lambda row, name: _fields(row, name, ("text",)),
    "prompt_completion": lambda row, name: _fields(row, name, ("prompt", "completion")),
    "alpaca": lambda row, name: _fields(row, name, ("instruction", "output"), ("input",)),
    "chat": _normalize_chat,
    "classification": _normalize_classification,
}
