"""Preference data for DPO: the three row shapes, their row checks, and pairs of training features.

| shape   | a row                                                                                         |
|---------|-----------------------------------------------------------------------------------------------|
| plain   | `{"prompt": str, "chosen": str, "rejected": str}`                                             |
| chat    | `{"messages": [prompt turns], "chosen": {assistant message}, "rejected": {assistant message}}` |
| OpenAI  | `{"input": {"messages": [...]}, "preferred_output": [{assistant message}],`                   |
|         | ` "non_preferred_output": [{assistant message}]}` (OpenAI's preference fine-tuning format)    |

All three are the one dataset format `preference`. A canonical example is `{"prompt": str, "chosen": str,
"rejected": str}` (plain) or `{"messages": [...], "chosen": str, "rejected": str}` (chat and OpenAI): the answers
become plain text, the prompt keeps its shape. An answer renders exactly as SFT renders it: after a plain prompt
as a prompt_completion row, after chat turns as the assistant's reply in the chat template; only its tokens count.

An SFT job on a preference file learns the chosen answers (`answer_example(example, "chosen")`); the answers are
encoded by `trainer.data.render.encode_answers`, pairs of them by `trainer.dpo.pair_features`.
"""
from __future__ import annotations

from trainer.data.reader import json_type

FORMAT = "preference"
ANSWER_SIDES = ("chosen", "rejected")
OPENAI_FIELDS = {"chosen": "preferred_output", "rejected": "non_preferred_output"}


def is_preference_row(row: dict) -> bool:
    return ("chosen" in row and "rejected" in row) or all(name in row for name in OPENAI_FIELDS.values())


def normalize_preference(row: dict, name) -> tuple[dict | None, list[tuple]]:
    """(canonical example, []) or (None, [(field, message), ...]); `name(field)` is the file's column name."""
    openai = "chosen" not in row and "rejected" not in row
    problems: list[tuple] = []
    example: dict = {}
    if openai:
        source = row.get("input")
        messages = source.get("messages") if isinstance(source, dict) else None
        example_prompt, problem = _prompt_turns(messages, "input.messages")
        if not isinstance(source, dict):
            problem = ("input", f"'input' must be an object with 'messages', got {json_type(source)}")
    elif "messages" in row:
        example_prompt, problem = _prompt_turns(row["messages"], name("messages"))
    else:
        example_prompt, problem = _text(row.get("prompt"), name("prompt") if "prompt" in row else "prompt")
        if "prompt" not in row:
            problem = ("prompt", "missing field 'prompt' (or 'messages'): a preference row needs the prompt that "
                                 "both answers reply to")
    if problem:
        problems.append(problem)
    example["messages" if openai or "messages" in row else "prompt"] = example_prompt
    for side in ANSWER_SIDES:
        field = OPENAI_FIELDS[side] if openai else name(side)
        answer, problem = _answer(row.get(OPENAI_FIELDS[side] if openai else side), field, openai)
        example[side] = answer
        if problem:
            problems.append(problem)
    if not problems and example["chosen"] == example["rejected"]:
        problems.append((name("rejected") if not openai else OPENAI_FIELDS["rejected"],
                         "the chosen and rejected answers are identical: there is no preference to learn"))
    return (None, problems) if problems else (example, [])


def answer_example(example: dict, side: str) -> tuple[dict, str]:
    """(SFT example, its format) for the prompt followed by the `side` answer ("chosen" or "rejected")."""
    if "messages" in example:
        return {"messages": example["messages"] + [{"role": "assistant", "content": example[side]}]}, "chat"
    return {"prompt": example["prompt"], "completion": example[side]}, "prompt_completion"


def prompt_layout(examples: list[dict]) -> str:
    """"chat" when every prompt is chat turns (the chat and OpenAI shapes, trained in the chat template), else
    "text": recorded in a run's data statistics so the playground lays a prompt out as training did."""
    return "chat" if examples and all("messages" in example for example in examples) else "text"


def prompt_text(example: dict) -> tuple[str | list[dict], str]:
    """(the prompt as generation takes it, "chat" or "text"): the chat turns, or the plain prompt."""
    return (example["messages"], "chat") if "messages" in example else (example["prompt"], "text")


def _prompt_turns(messages, field: str) -> tuple[list | None, tuple | None]:
    if not isinstance(messages, list):
        return None, (field, f"'{field}' must be a list of prompt messages, got {json_type(messages)}")
    if not messages:
        return None, (field, f"'{field}' has no messages: the answers need a prompt")
    turns = []
    for i, turn in enumerate(messages):
        if not isinstance(turn, dict) or turn.get("role") not in ("system", "user", "assistant"):
            return None, (f"{field}[{i}]", f"message {i + 1} must be an object with a role of system, user or "
                                           "assistant and a text 'content'")
        if not isinstance(turn.get("content"), str):
            return None, (f"{field}[{i}].content", f"message {i + 1}: 'content' must be text, got "
                                                   f"{json_type(turn.get('content'))}")
        turns.append({"role": turn["role"], "content": turn["content"]})
    return turns, None


def _answer(value, field: str, openai: bool) -> tuple[str | None, tuple | None]:
    """The answer's text from a string, an assistant message, or (OpenAI) a list of one assistant message."""
    if openai:
        if not isinstance(value, list) or len(value) != 1:
            return None, (field, f"'{field}' must be a list of exactly one assistant message, got "
                                 f"{json_type(value)}")
        value = value[0]
    if isinstance(value, dict):
        if value.get("role", "assistant") != "assistant":
            return None, (f"{field}.role", f"'{field}' must be an assistant message, got role {value.get('role')!r}")
        return _text(value.get("content"), f"{field}.content")
    return _text(value, field)


def _text(value, field: str) -> tuple[str | None, tuple | None]:
    if not isinstance(value, str):
        return None, (field, f"'{field}' must be text, got {json_type(value)}")
    if not value.strip():
        return None, (field, f"'{field}' is empty")
    return value, None
