"""Answers you can read: a causal-LM run with `sample_answers` on writes answers to a few prompts at step 0, at every periodic eval and at
the end, with the same sampling settings and seed each time, so checkpoints can be compared by reading them.

The prompts are the job's `sample_prompts` (at most MAX_PROMPTS, sent as plain text), or by default the prompts of
the first DEFAULT_PROMPTS held-out examples (their prompt tokens exactly as training renders them, shown decoded).
The record kept in the run's state and in metrics.json is

    {"prompts": [text, ...], "checkpoints": [{"step": int, "stage": "base" | "during" | "final", "answers": [...]}]}
"""
from __future__ import annotations

from trainer.data.render import IGNORE_INDEX
from trainer.inference import DEFAULT_MAX_PROMPT_TOKENS, _eos_ids, prompt_ids, sample_token_ids

MAX_PROMPTS = 10
DEFAULT_PROMPTS = 5
# Short answers with a fixed seed: the same checkpoint always writes the same text.
SETTINGS = {"temperature": 0.7, "top_p": 0.95, "top_k": 50, "max_new_tokens": 32, "repetition_penalty": 1.0,
            "seed": 0}


def held_out_prompt_ids(features: list[dict], count: int = DEFAULT_PROMPTS) -> list[list[int]]:
    """The prompt tokens (those before the first labelled one) of the first `count` held-out features; a DPO
    pair's are its chosen feature's."""
    prompts = []
    for feature in features:
        feature = feature.get("chosen", feature)
        labels = feature["labels"]
        start = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), 0)
        if start:
            prompts.append(feature["input_ids"][:start])
        if len(prompts) == count:
            break
    return prompts


def prepare(tokenizer, typed: list[str] | None, eval_features: list[dict]) -> tuple[list[str], list[list[int]]]:
    """(prompts as shown, their token ids)."""
    if typed:
        ids = [prompt_ids(tokenizer, prompt, DEFAULT_MAX_PROMPT_TOKENS) for prompt in typed[:MAX_PROMPTS]]
        return list(typed[:MAX_PROMPTS]), ids
    ids = held_out_prompt_ids(eval_features)
    return [readable(tokenizer.decode(prompt, skip_special_tokens=True)) for prompt in ids], ids


def readable(text: str) -> str:
    """`text` with NUL characters shown as U+FFFD: an untrained model can write them, and PostgreSQL's JSON columns,
    where the record is kept, refuse them."""
    return text.replace("\x00", "\ufffd")


def answers(model, tokenizer, prompts_ids: list[list[int]]) -> list[str]:
    eos = _eos_ids(model, tokenizer)
    return [readable(tokenizer.decode(list(sample_token_ids(model, ids, eos_ids=eos, **SETTINGS)),
                                      skip_special_tokens=True))
            for ids in prompts_ids]
