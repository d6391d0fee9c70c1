"""Validate a dataset file row by row before any training: the report behind the web page and `trainer validate`.

`validate_file` streams the file once (memory stays flat: rows are checked and dropped, token lengths are kept
as a Counter of lengths, not a list) and returns a `ValidationReport`:
problems `[{row, field, message, file}]` (the first `max_problems`, plus `problem_count`), token-length statistics
and a histogram, truncation counts at `max_length`, label counts for classification, the first `preview_rows`
rows as the model will see them (segments marked by whether they count toward the loss), and `usable`.

Token lengths come from `tokenizer` when one is given (the exact training features, see `render`); otherwise
they are estimated as UTF-8 bytes / 4 of the rendered text, and `token_stats["estimated"]` says so.
Median and p95 use the nearest-rank method.

`checked_rows` is the row check itself; `trainer.data.dataset` trains on exactly the rows it accepts.
"""
from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

from trainer.errors import DataError
from trainer.data import formats, render
from trainer.data.reader import DEFAULT_MAX_LINE_BYTES, RowProblem, RowStream, open_rows

DETECTION_ROWS = 100
DETECTION_SCAN_ITEMS = 10_000  # a file with no readable row among its first 10,000 is judged on those
ENCODE_BATCH = 256
HISTOGRAM_BINS = 20
PROGRESS_EVERY_ROWS = 10_000

Checked = tuple[int, dict]  # (row number, canonical example)


@dataclass
class ValidationReport:
    format: str | None = None
    task: str | None = None
    kind: str | None = None  # jsonl | json | csv | tsv
    compressed: bool = False
    columns: list[str] = field(default_factory=list)  # the CSV header, or the fields of the first rows
    rows: int = 0
    valid_rows: int = 0
    problems: list[dict] = field(default_factory=list)
    problem_count: int = 0
    warnings: list[str] = field(default_factory=list)
    max_length: int = 512
    truncated_rows: int = 0
    token_stats: dict = field(default_factory=dict)
    histogram: dict = field(default_factory=dict)
    labels: dict[str, int] | None = None
    eval: dict | None = None
    preview: list[dict] = field(default_factory=list)
    usable: bool = False
    summary: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def checked_rows(stream: RowStream, fmt: str = "auto", task: str | None = None,
                 mapping: dict[str, str] | None = None) -> tuple[str | None, Iterator[Checked | RowProblem]]:
    """(format, rows) where rows yields `(row, canonical example)` for good rows and `RowProblem`s for the rest.

    `fmt="auto"` detects the format from the first DETECTION_ROWS readable rows; the format is None (and rows are
    only the problems found) when none of the first DETECTION_SCAN_ITEMS rows is readable. Raises DataError for an unknown format, or one that cannot train `task`.
    """
    mapping = formats.check_mapping(mapping)
    items = iter(stream)
    head = list(_first_rows(items, DETECTION_ROWS))
    raw = [item[1] for item in head if not isinstance(item, RowProblem)]
    if raw and not stream.columns:
        stream.columns = list(raw[0])
    rows = [formats.apply_mapping(row, mapping) for row in raw]
    if fmt == "auto":
        fmt = formats.detect_format(rows, task) if rows else None
    elif fmt not in formats.FORMATS:
        raise DataError(f"unknown format {fmt!r}; use auto or one of {', '.join(formats.FORMATS)}")
    elif task is not None and formats.task_for_format(fmt) != task:
        raise DataError(f"the {fmt} format cannot train a {task} model")
    if fmt is None:
        return None, iter(head)
    return fmt, _check(itertools.chain(head, items), fmt, mapping)


def _first_rows(items: Iterator, count: int) -> Iterator:
    """Items up to the count-th readable row, and at most DETECTION_SCAN_ITEMS (memory stays bounded)."""
    seen = 0
    for scanned, item in enumerate(items, 1):
        yield item
        seen += not isinstance(item, RowProblem)
        if seen == count or scanned == DETECTION_SCAN_ITEMS:
            return


def _check(items: Iterator, fmt: str, mapping: dict[str, str]) -> Iterator[Checked | RowProblem]:
    for item in items:
        if isinstance(item, RowProblem):
            yield item
            continue
        row, raw = item
        example, problems = formats.normalize(formats.apply_mapping(raw, mapping), fmt, mapping)
        if example is None:
            yield from (RowProblem(row, name, message) for name, message in problems)
        else:
            yield row, example


class _Tally:
    """Counts for one file as its rows stream past."""

    def __init__(self, file: str, max_problems: int):
        self.file, self.max_problems = file, max_problems
        self.rows = self.valid = self.truncated = self.problem_count = 0
        self.last_problem_row: int | None = None
        self.estimated = True
        self.problems: list[dict] = []
        self.fatal: list[str] = []
        self.lengths: Counter[int] = Counter()
        self.labels: Counter[str] = Counter()

    def problem(self, problem: RowProblem) -> None:
        self.problem_count += 1
        if problem.fatal and not self.fatal:
            self.fatal.append(problem.message)
        if problem.row is not None and problem.row != self.last_problem_row:
            self.last_problem_row = problem.row
            self.rows += 1  # a row's problems arrive together: a row with several problems is one row
        if len(self.problems) < self.max_problems:
            self.problems.append({**problem.to_dict(), "file": self.file})


def validate_file(path, *, format: str = "auto", task: str | None = None, tokenizer=None, max_length: int = 512,
                  column_mapping: dict[str, str] | None = None, eval_path=None, max_problems: int = 50,
                  preview_rows: int = 20, train_on_prompt: bool = False,
                  max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                  progress: Callable[[int, int], None] | None = None) -> ValidationReport:
    """Check every row of `path` (and of `eval_path`, in the training file's format) and describe the dataset.

    `progress(bytes_read, file_size)` is called every PROGRESS_EVERY_ROWS rows. Never raises for bad data: every
    problem, file-level ones included, ends up in the report.
    """
    report = ValidationReport(max_length=max_length)
    tally = _Tally("train", max_problems)
    tally.estimated = tokenizer is None
    try:
        with open_rows(path, max_line_bytes=max_line_bytes) as stream:
            report.kind, report.compressed = stream.kind, stream.compressed
            try:
                fmt, rows = checked_rows(stream, format, task, column_mapping)
            finally:  # an unrecognised format still lists the columns: the choices for a column mapping
                report.columns = stream.columns
            report.format, report.task = fmt, fmt and formats.task_for_format(fmt)
            _scan(rows, fmt, tally, report, tokenizer, train_on_prompt, preview_rows,
                  lambda: progress and progress(stream.position(), stream.size))
    except DataError as error:
        tally.problem(RowProblem(None, None, str(error), fatal=True))
    _fill_train(report, tally)
    if eval_path is not None and report.format is not None:
        _validate_eval(report, eval_path, column_mapping, tokenizer, max_problems, max_line_bytes)
    _judge(report, tally)
    return report


def _scan(rows, fmt, tally: _Tally, report: ValidationReport | None, tokenizer, train_on_prompt: bool,
          preview_rows: int, tick: Callable[[], None], known_labels: set[str] | None = None) -> None:
    pending: list[Checked] = []
    for seen, item in enumerate(rows, 1):
        if seen % PROGRESS_EVERY_ROWS == 0:
            tick()
        if isinstance(item, RowProblem):
            tally.problem(item)
            continue
        if known_labels is not None and item[1]["label"] not in known_labels:
            tally.problem(RowProblem(item[0], "label", f"label {item[1]['label']!r} does not appear in the "
                                                       "training file"))
            continue
        pending.append(item)
        if len(pending) == ENCODE_BATCH:
            _measure(pending, fmt, tally, report, tokenizer, train_on_prompt, preview_rows)
            pending = []
    _measure(pending, fmt, tally, report, tokenizer, train_on_prompt, preview_rows)


def _measure(batch: list[Checked], fmt, tally: _Tally, report, tokenizer, train_on_prompt, preview_rows) -> None:
    """Count good rows, their token lengths and labels; fill the preview from the first ones."""
    if not batch:
        return
    max_length = report.max_length if report else 2**31
    if tokenizer is None:
        lengths = [render.estimate_tokens(example, fmt) for _, example in batch]
        loss_tokens = [1] * len(batch)
        refusals = [None] * len(batch)
    else:
        encoded = render.encode_batch([example for _, example in batch], fmt, tokenizer, max_length=max_length,
                                      train_on_prompt=train_on_prompt)
        lengths = [item.full_length for item in encoded]
        loss_tokens = [item.loss_tokens for item in encoded]
        refusals = [item.problem for item in encoded]
    for (row, example), length, loss, refusal in zip(batch, lengths, loss_tokens, refusals):
        if refusal is not None:
            tally.problem(RowProblem(row, "messages", refusal))
            continue
        if loss == 0:
            tally.problem(RowProblem(row, None, f"the prompt alone is longer than max_length={max_length} "
                                                "tokens: nothing is left to learn from this row"))
            continue
        tally.rows += 1
        tally.valid += 1
        tally.lengths[length] += 1
        tally.truncated += length > max_length
        if fmt == "classification":
            tally.labels[example["label"]] += 1
        if report is not None and len(report.preview) < preview_rows:
            report.preview.append(_preview(row, example, fmt, tokenizer, max_length, train_on_prompt, length))


def _preview(row, example, fmt, tokenizer, max_length, train_on_prompt, length) -> dict:
    parts = render.render_preview(example, fmt, tokenizer, max_length=max_length, train_on_prompt=train_on_prompt,
                                  per_token=True)
    preview = {"row": row, "segments": [{"text": text, "loss": counts} for text, counts in parts],
               "tokens": length, "truncated": length > max_length}
    if fmt == "classification":
        preview["label"] = example["label"]
    return preview


def _fill_train(report: ValidationReport, tally: _Tally) -> None:
    report.rows, report.valid_rows, report.truncated_rows = tally.rows, tally.valid, tally.truncated
    report.problems, report.problem_count = tally.problems, tally.problem_count
    report.token_stats = token_stats(tally.lengths, estimated=tally.estimated)
    report.histogram = histogram(tally.lengths, report.max_length)
    if report.format == "classification":
        report.labels = dict(sorted(tally.labels.items()))


def _validate_eval(report: ValidationReport, eval_path, mapping, tokenizer, max_problems, max_line_bytes) -> None:
    tally = _Tally("eval", max(0, max_problems - len(report.problems)))
    known = set(report.labels or {}) if report.format == "classification" else None
    try:
        with open_rows(eval_path, max_line_bytes=max_line_bytes) as stream:
            _, rows = checked_rows(stream, report.format, None, mapping)
            _scan(rows, report.format, tally, None, tokenizer, False, 0, lambda: None, known)
    except DataError as error:
        tally.problem(RowProblem(None, None, f"eval file: {error}", fatal=True))
    report.problems += tally.problems
    report.problem_count += tally.problem_count
    report.eval = {"rows": tally.rows, "valid_rows": tally.valid, "problem_count": tally.problem_count,
                   "fatal": tally.fatal[0] if tally.fatal else None,
                   "labels": dict(sorted(tally.labels.items())) if known is not None else None}


def _judge(report: ValidationReport, tally: _Tally) -> None:
    """Set `usable`, `summary` and `warnings` from the counts."""
    reasons = list(tally.fatal)
    if not reasons and report.valid_rows == 0:
        reasons.append(_why_no_rows(report))
    if report.labels is not None and report.valid_rows:
        reasons += _label_reasons(report)
    if report.eval is not None:
        if report.eval["fatal"]:
            reasons.append(report.eval["fatal"])
        elif report.eval["valid_rows"] == 0:
            reasons.append("the eval file has no usable rows")
    if report.truncated_rows:
        report.warnings.append(f"{report.truncated_rows} rows are longer than max_length={report.max_length} "
                               "tokens and will be cut" + (" (estimated)" if report.token_stats["estimated"] else ""))
    report.usable = not reasons
    if reasons:
        report.summary = reasons[0]
        return
    skipped = report.rows - report.valid_rows
    report.summary = (f"{report.valid_rows} of {report.rows} rows are usable ({report.format}, {report.task})"
                      + (f"; {skipped} rows with problems will be skipped" if skipped else ""))


def _why_no_rows(report: ValidationReport) -> str:
    if report.rows:
        return ("no row could be read: see the problems" if report.format is None
                else "no row is usable: every row has a problem")
    if report.kind in ("csv", "tsv"):
        return f"the CSV file has a header ({', '.join(report.columns)}) but no data rows"
    return "the file has no rows"


def _label_reasons(report: ValidationReport) -> list[str]:
    labels = report.labels
    if len(labels) < 2:
        return [f"every row has the label {next(iter(labels))!r}: classification needs at least two labels"]
    single = [label for label, count in labels.items() if count == 1]
    if len(single) == len(labels):
        return ["every label has only one example: each label needs several examples to learn from"]
    if single:
        shown = ", ".join(repr(label) for label in single[:10]) + (" ..." if len(single) > 10 else "")
        report.warnings.append(f"{len(single)} labels have only one example ({shown}); they cannot be both learned "
                               "and evaluated: add examples or merge them")
    return []


def token_stats(lengths: Counter, *, estimated: bool) -> dict:
    """{min, median, p95, max, mean, estimated} of a Counter {length: rows}; all None when it is empty."""
    total = sum(lengths.values())
    stats = {"min": None, "median": None, "p95": None, "max": None, "mean": None, "estimated": estimated,
             "method": "UTF-8 bytes / 4" if estimated else "tokenizer"}
    if not total:
        return stats
    ordered = sorted(lengths.items())
    stats.update(min=ordered[0][0], max=ordered[-1][0], mean=round(sum(k * v for k, v in ordered) / total, 1),
                 median=_nearest_rank(ordered, total, 0.5), p95=_nearest_rank(ordered, total, 0.95))
    return stats


def _nearest_rank(ordered: list[tuple[int, int]], total: int, quantile: float) -> int:
    rank, seen = max(1, math.ceil(quantile * total - 1e-9)), 0
    for length, count in ordered:
        seen += count
        if seen >= rank:
            return length
    return ordered[-1][0]


def histogram(lengths: Counter, max_length: int, bins: int = HISTOGRAM_BINS) -> dict:
    """Equal-width bins from 0 to the longest row: {edges (bins + 1), counts (bins), max_length}."""
    if not lengths:
        return {"edges": [], "counts": [], "max_length": max_length}
    width = max(1, -(-max(lengths) // bins))
    counts = [0] * bins
    for length, rows in lengths.items():
        counts[min(length // width, bins - 1)] += rows
    return {"edges": [i * width for i in range(bins + 1)], "counts": counts, "max_length": max_length}
