"""Stream raw rows out of a dataset file without ever holding the file in memory.

Accepted: JSONL (one JSON object per line), a JSON array of objects, CSV (`.tsv`: tab-separated), each optionally
gzip-compressed (recognised by its magic bytes, not its name). Text must be UTF-8, with or without a BOM.
JSON vs JSONL is decided by the first non-blank character (`[` array, `{` JSONL; a `.jsonl` file whose first line
is a whole JSON list is JSONL), then the file extension, else CSV.

Row numbers, which every problem cites:
- JSONL and CSV: the line number in the file, 1-based, as an editor shows it. The CSV header is line 1, so the first
  data row is row 2 (the number a spreadsheet shows). A CSV record with a quoted newline takes its first line's number.
- JSON array: the element's position in the array, 1-based.

Memory stays flat whatever the file size:
- JSONL and CSV are read one physical line at a time with `readline(limit)`. A line longer than `max_line_bytes`
  (default 10 MB) is skipped in 1 MB chunks and reported as a problem, never loaded whole.
- A JSON array is parsed element by element out of a sliding text buffer with `json.JSONDecoder.raw_decode`.
  An element that does not fit in `max_line_bytes`, a syntax error, or undecodable bytes end the read with a
  *fatal* problem: an array cannot be resynchronised after a broken element (JSONL can: prefer it for big data).

`open_rows` raises `DataError` for problems that make the whole file unreadable and are visible before the first
row (missing, empty, binary, UTF-16, a CSV header that is not usable). Everything found while reading is yielded
as a `RowProblem`; `fatal=True` marks the ones that reject the file (bytes that are not UTF-8, a damaged gzip
stream, a broken JSON array).
"""
from __future__ import annotations

import codecs
import csv
import gzip
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Union

from trainer.errors import DataError

DEFAULT_MAX_LINE_BYTES = 10 * 2**20
CHUNK_BYTES = 2**20
SNIFF_BYTES = 8192
GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"

# Leading bytes of files people upload by mistake, and what to tell them.
BINARY_SIGNATURES = {
    b"PK\x03\x04": "a ZIP archive (an Excel .xlsx file?); export it as CSV or JSONL",
    b"%PDF": "a PDF document",
    b"PAR1": "a Parquet file; convert it to JSONL",
    b"SQLite format 3": "a SQLite database",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
}
_WHITESPACE = re.compile(r"[ \t\r\n]*")


@dataclass(frozen=True)
class RowProblem:
    """Something wrong with one row (`row` None: the file as a whole). `field` names the column, when one is at fault."""

    row: int | None
    field: str | None
    message: str
    fatal: bool = False

    def to_dict(self) -> dict:
        return {"row": self.row, "field": self.field, "message": self.message}


Row = tuple[int, dict]
RowOrProblem = Union[Row, RowProblem]


class RowStream:
    """An opened dataset file: `kind` ("jsonl" | "json" | "csv" | "tsv"), `columns` (CSV header), and its rows.

    Iterate it once to get `(row_number, dict)` tuples and `RowProblem`s in file order; `position()` is how many
    bytes of the file on disk have been consumed (for progress against `size`).
    """

    def __init__(self, path: Path, kind: str, compressed: bool, start: int, max_line_bytes: int):
        self.path, self.kind, self.compressed = path, kind, compressed
        self.size = path.stat().st_size
        self.columns: list[str] = []
        self._start, self._limit = start, max_line_bytes
        self._raw = open(path, "rb")
        self._stream: BinaryIO = gzip.GzipFile(fileobj=self._raw, mode="rb") if compressed else self._raw
        self._stream.read(start)  # skip the BOM
        if kind in ("csv", "tsv"):
            _set_csv_field_limit(max_line_bytes)
            self._bad_lines: dict[int, RowProblem] = {}
            self._csv = csv.reader(self._csv_text_lines(), delimiter="\t" if kind == "tsv" else ",")
            try:
                self.columns = self._read_header()
            except DataError:
                self.close()
                raise

    def position(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        self._stream.close()
        self._raw.close()

    def __enter__(self) -> "RowStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[RowOrProblem]:
        rows = {"jsonl": self._jsonl_rows, "json": self._json_array_rows}.get(self.kind, self._csv_rows)
        try:
            yield from rows()
        except (OSError, EOFError, zlib.error) as error:
            yield RowProblem(None, None, f"the compressed file is damaged or cut short ({error}); "
                                         "upload it again", fatal=True)

    # --- physical lines (JSONL, CSV) ---

    def _lines(self) -> Iterator[tuple[int, bytes | None, int, int]]:
        """(line number, bytes or None when over the limit, byte offset of the line, its size in bytes)."""
        line_no, offset = 0, self._start
        while True:
            line = self._stream.readline(self._limit + 1)
            if not line:
                return
            line_no += 1
            size = len(line)
            if size > self._limit and not line.endswith(b"\n"):
                line = None
                while True:  # drop the rest of the line chunk by chunk
                    chunk = self._stream.readline(CHUNK_BYTES)
                    size += len(chunk)
                    if not chunk or chunk.endswith(b"\n"):
                        break
            yield line_no, line, offset, size
            offset += size

    def _too_long(self, line_no: int, size: int) -> RowProblem:
        return RowProblem(line_no, None, f"line {line_no} is {_mb(size)}, over the {_mb(self._limit)} limit for "
                                         "one row; it was skipped")

    def _jsonl_rows(self) -> Iterator[RowOrProblem]:
        for line_no, line, offset, size in self._lines():
            if line is None:
                yield self._too_long(line_no, size)
                continue
            text, problem = _decode_line(line, line_no, offset)
            if problem:
                yield problem
            elif text.strip():
                yield _parse_json_line(text, line_no)

    # --- CSV ---

    def _csv_text_lines(self) -> Iterator[str]:
        """Decoded lines for csv.reader; lines that cannot be used become "\\n" and their problem is remembered."""
        for line_no, line, offset, size in self._lines():
            if line is None:
                self._bad_lines[line_no] = self._too_long(line_no, size)
                yield "\n"
                continue
            text, problem = _decode_line(line, line_no, offset)
            if problem:
                self._bad_lines[line_no] = problem
                yield "\n"
            else:
                yield text

    def _next_record(self) -> tuple[int, list[str] | RowProblem] | None:
        """The next CSV record with the line it starts on, skipping blank lines; None at the end."""
        while True:
            first = self._csv.line_num + 1
            try:
                values = next(self._csv)
            except StopIteration:
                return None
            except csv.Error as error:
                return first, RowProblem(first, None, f"row {first} is not valid CSV: {error}")
            bad = [self._bad_lines.pop(n) for n in range(first, self._csv.line_num + 1) if n in self._bad_lines]
            if bad:
                return first, bad[0]
            if values:
                return first, values

    def _read_header(self) -> list[str]:
        record = self._next_record()
        if record is None:
            raise DataError("the file is empty")
        _, header = record
        if isinstance(header, RowProblem):
            raise DataError(f"the CSV header cannot be read: {header.message}")
        columns = [name.strip() or f"column_{i + 1}" for i, name in enumerate(header)]
        duplicates = sorted({name for name in columns if columns.count(name) > 1})
        if duplicates:
            raise DataError(f"the CSV header names a column twice: {', '.join(duplicates)}")
        return columns

    def _csv_rows(self) -> Iterator[RowOrProblem]:
        width = len(self.columns)
        while (record := self._next_record()) is not None:
            row, values = record
            if isinstance(values, RowProblem):
                yield values
            elif len(values) != width:
                yield RowProblem(row, None, f"row {row} has {len(values)} values but the header has {width} "
                                            f"columns ({', '.join(self.columns)})")
            else:
                yield row, dict(zip(self.columns, values))

    # --- JSON array ---

    def _json_array_rows(self) -> Iterator[RowOrProblem]:
        text = _TextBuffer(_text_chunks(self._stream, self._start))
        decoder = json.JSONDecoder()
        try:
            if text.skip_whitespace() != "[":
                raise _Broken(f"invalid JSON {text.where()}: expected '[' to open the array")
            text.pos += 1
            index = 0
            if text.skip_whitespace() == "]":
                text.pos += 1
            else:
                while True:
                    index += 1
                    text.skip_whitespace()
                    value = text.decode_value(decoder, self._limit, index)
                    yield _object_or_problem(value, index, f"element {index}")
                    char = text.skip_whitespace()
                    if char not in (",", "]"):
                        found = "the file ends" if char == "" else f"found {char!r}"
                        raise _Broken(f"invalid JSON {text.where()}: expected ',' or ']' after element {index}, "
                                      f"{found}")
                    text.pos += 1
                    if char == "]":
                        break
            if text.skip_whitespace() != "":
                raise _Broken(f"invalid JSON {text.where()}: extra data after the closing ']'")
        except _Broken as broken:
            yield RowProblem(None, None, str(broken), fatal=True)
        except _NotUtf8 as error:
            yield RowProblem(None, None, str(error), fatal=True)


class _Broken(Exception):
    """A JSON array that cannot be read further; the message says where."""


class _NotUtf8(Exception):
    pass


class _TextBuffer:
    """A sliding window of decoded text over a chunk iterator, with the line count of what was dropped."""

    def __init__(self, chunks: Iterator[str]):
        self.chunks, self.buf, self.pos, self.eof = chunks, "", 0, False
        self.lines_dropped = self.columns_dropped = 0  # newlines dropped; characters dropped since the last one

    def more(self) -> bool:
        """Drop consumed text, append the next chunk; False at the end of the file."""
        if self.pos:
            newlines, last = self.buf.count("\n", 0, self.pos), self.buf.rfind("\n", 0, self.pos)
            self.lines_dropped += newlines
            self.columns_dropped = self.pos - last - 1 if newlines else self.columns_dropped + self.pos
            self.buf, self.pos = self.buf[self.pos:], 0
        chunk = next(self.chunks, None)
        if chunk is None:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def skip_whitespace(self) -> str:
        """Move past whitespace; the next character, or "" at the end of the file."""
        while True:
            self.pos = _WHITESPACE.match(self.buf, self.pos).end()
            if self.pos < len(self.buf) or not self.more():
                return self.buf[self.pos:self.pos + 1]

    def where(self) -> str:
        at, last = self.pos, self.buf.rfind("\n", 0, self.pos)
        line = self.lines_dropped + self.buf.count("\n", 0, at) + 1
        column = at - last if last >= 0 else self.columns_dropped + at + 1
        return f"at line {line}, column {column}"

    def decode_value(self, decoder: json.JSONDecoder, limit: int, index: int):
        while True:
            try:
                value, end = decoder.raw_decode(self.buf, self.pos)
                # A number or literal that ends exactly at the buffer's end may continue in the next chunk.
                if end < len(self.buf) or self.eof:
                    self.pos = end
                    return value
            except json.JSONDecodeError as error:
                if self.eof:
                    self.pos = _before_line_breaks(self.buf, error.pos, self.pos)
                    raise _Broken(f"invalid JSON {self.where()}: {error.msg}") from None
            except RecursionError:
                raise _Broken(f"element {index} ({self.where()}) is nested too deeply to read") from None
            if len(self.buf) - self.pos > limit:
                raise _Broken(f"element {index} ({self.where()}) is over the {_mb(limit)} limit for one row; "
                              "a JSON array cannot be read past it: save the data as JSONL") from None
            wanted = len(self.buf) - self.pos  # grow the window geometrically: big elements parse in O(size)
            while len(self.buf) - self.pos < 2 * wanted and self.more():
                pass


def open_rows(path: str | Path, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> RowStream:
    """Open a dataset file for streaming, after checking it is a non-empty UTF-8 text file of a known kind."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"dataset file not found: {path}")
    with open(path, "rb") as raw:
        compressed = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        try:
            head = (gzip.GzipFile(fileobj=raw) if compressed else raw).read(SNIFF_BYTES)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"the file looks gzip-compressed but cannot be decompressed ({error})") from None
    _check_head(head)
    start = len(UTF8_BOM) if head.startswith(UTF8_BOM) else 0
    return RowStream(path, _kind(head[start:], path, compressed), compressed, start, max_line_bytes)


def _check_head(head: bytes) -> None:
    if not head.strip():
        raise DataError("the file is empty")  # whitespace-only files over SNIFF_BYTES read as having no rows
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError("the file is UTF-16 text; save it as UTF-8 and upload it again")
    for signature, what in BINARY_SIGNATURES.items():
        if head.startswith(signature):
            raise DataError(f"this is not a text dataset: it looks like {what}")
    if b"\x00" in head:
        raise DataError("this file is binary (it contains NUL bytes), not JSONL, JSON or CSV text")


def _kind(head: bytes, path: Path, compressed: bool) -> str:
    suffixes = path.suffixes[:-1] if compressed and path.suffix == ".gz" else path.suffixes
    extension = suffixes[-1].lower() if suffixes else ""
    first_line = head.lstrip().split(b"\n", 1)[0]
    if first_line[:1] == b"[":
        # A .jsonl file whose first line is a whole JSON value has list rows; otherwise it is an array.
        return "jsonl" if extension in (".jsonl", ".ndjson") and _is_json(first_line) else "json"
    if first_line[:1] == b"{":
        return "jsonl"
    return {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".tsv": "tsv"}.get(extension, "csv")


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
        return True
    except ValueError:
        return False


def _decode_line(line: bytes, line_no: int, offset: int) -> tuple[str | None, RowProblem | None]:
    try:
        return line.decode("utf-8"), None
    except UnicodeDecodeError as error:
        return None, RowProblem(line_no, None, _not_utf8_message(line, error, offset, f"on line {line_no}"),
                                fatal=True)


def _not_utf8_message(data: bytes, error: UnicodeDecodeError, offset: int, where: str) -> str:
    byte = data[error.start]
    try:
        data.decode("cp1252")
        guess = "it looks like Latin-1 / Windows-1252 text"
    except UnicodeDecodeError:
        guess = "it is in some other encoding"
    return (f"the file is not UTF-8: byte {offset + error.start} (0x{byte:02x}) {where} cannot be decoded; "
            f"{guess}. Save the file as UTF-8 and upload it again")


def _text_chunks(stream: BinaryIO, offset: int) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    while True:
        data = stream.read(CHUNK_BYTES)
        try:
            text = decoder.decode(data, final=not data)
        except UnicodeDecodeError as error:
            raise _NotUtf8(_not_utf8_message(error.object, error, offset, "in the file")) from None
        if not data:
            return
        offset += len(data)
        if text:
            yield text


def _before_line_breaks(text: str, at: int, start: int = 0) -> int:
    """`at`, or where the content before it ends when only whitespace with a line break lies between.

    A value cut short at the end of a line ("{"a": 1" then a newline) fails where the parser next looks, on the
    following line; the mistake a person must fix is at the end of the line before."""
    end = len(text[start:at].rstrip(" \t\r\n")) + start
    return end if "\n" in text[end:at] else at


def _parse_json_line(text: str, line_no: int) -> RowOrProblem:
    text = text.rstrip("\r\n")  # a row cut short is reported at its own end, not on a line 2 of its own
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return RowProblem(line_no, None, f"invalid JSON on line {line_no}, column {error.pos + 1}: {error.msg}")
    except RecursionError:
        return RowProblem(line_no, None, f"line {line_no} is nested too deeply to read")
    return _object_or_problem(value, line_no, f"line {line_no}")


def _object_or_problem(value, row: int, where: str) -> RowOrProblem:
    if isinstance(value, dict):
        return row, value
    return RowProblem(row, None, f"{where} is {json_type(value)}, expected an object such as "
                                 '{"text": "..."}')


def json_type(value) -> str:
    """How a person would name a JSON value's type: "a number", "text", "a list"..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


def _set_csv_field_limit(limit: int) -> None:
    # csv's default field limit is 128 KB; one field may be as long as one row may be.
    if csv.field_size_limit() < limit:
        csv.field_size_limit(limit)
