"""Which held-out rows a classification run changed its mind on: the base model's prediction for each held-out
example against the kept adapter's, so a team can read what training fixed and what it broke.

The record in metrics.json (`prediction_changes`) is

    {"compared": int, "changed": int, "fixed": int, "broken": int,
     "rows": [{"example": int, "text": str, "label": str, "before": str, "after": str}, ...]}

`fixed` rows went from wrong to right, `broken` ones from right to wrong (a row can change from one wrong label to
another: counted in `changed` only). `rows` holds the first MAX_ROWS changed examples in held-out order; `example`
is the example's position among the held-out examples, `text` what the model read (decoded from its tokens, so
after truncation to max_length), cut to MAX_TEXT characters.
"""
from __future__ import annotations

MAX_ROWS = 50
MAX_TEXT = 500


def compare(before: list[int], after: list[int], features: list[dict], label_names: list[str], tokenizer) -> dict:
    """The record above for predictions `before` and `after` (label ids, one per feature of `features`)."""
    changed = [i for i, (old, new) in enumerate(zip(before, after)) if old != new]
    rows = [{"example": i, "text": tokenizer.decode(features[i]["input_ids"], skip_special_tokens=True)[:MAX_TEXT],
             "label": label_names[features[i]["label"]], "before": label_names[before[i]],
             "after": label_names[after[i]]}
            for i in changed[:MAX_ROWS]]
    return {"compared": len(before), "changed": len(changed),
            "fixed": sum(after[i] == features[i]["label"] for i in changed),
            "broken": sum(before[i] == features[i]["label"] for i in changed), "rows": rows}
