"""Helpers for the data tests: write dataset files of every kind into a test's tmp_path.

Tokenizers come from tiny_models (byte-level: one token per UTF-8 byte, so expected token counts are byte counts).
"""
from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path


def write_jsonl(path: Path, rows: list, *, compress: bool = False) -> Path:
    text = "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_csv(path: Path, header: list[str], rows: list[list], *, encoding: str = "utf-8") -> Path:
    with open(path, "w", newline="", encoding=encoding) as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def chat(*turns: tuple[str, str]) -> dict:
    return {"messages": [{"role": role, "content": content} for role, content in turns]}



def ticket_templates(text: str, label: str) -> tuple[int, int | None]:
    """(problem, detail) template indexes of a support-ticket sample row (detail None for the shapes without
    one), found by matching each of its label's templates, placeholders as wildcards, in the text."""
    import re

    from trainer.samples import support_tickets

    def found(templates: list[str]) -> list[int]:
        patterns = [re.escape(t).replace(r"\{", "{").replace(r"\}", "}") for t in templates]
        patterns = [re.sub(r"\{\w+\}", ".+?", p) for p in patterns]
        return [i for i, p in enumerate(patterns) if re.search(p, text, re.IGNORECASE)]

    problems, details = found(support_tickets.PROBLEMS[label]), found(support_tickets.DETAILS[label])
    assert len(problems) == 1 and len(details) <= 1, (text, problems, details)
    return problems[0], (details[0] if details else None)


def split_tickets_by_template(rows: list[dict], every: int = 5) -> tuple[list[dict], list[dict]]:
    """(train rows, held-out rows) of the support-ticket sample, with no problem or detail template in both:
    every `every`-th problem and every 4th detail of each label is held out, and a row that mixes a held-out
    template with a training one is in neither."""
    train, held_out = [], []
    for row in rows:
        problem, detail = ticket_templates(row["text"], row["label"])
        unseen_problem, unseen_detail = problem % every == every - 1, detail is not None and detail % 4 == 3
        if unseen_problem and (detail is None or unseen_detail):
            held_out.append(row)
        elif not unseen_problem and not unseen_detail:
            train.append(row)
    return train, held_out
