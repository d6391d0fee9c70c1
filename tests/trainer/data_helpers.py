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

