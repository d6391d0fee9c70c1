"""reader: streaming rows with file-order numbering, bounded memory, and each file kind."""
from __future__ import annotations

import gzip
import json
import tracemalloc

import pytest

from trainer.data import reader
from trainer.data.reader import RowProblem, open_rows
from trainer.errors import DataError


def rows_of(path, **options) -> list:
    with open_rows(path, **options) as stream:
        return list(stream)


def test_jsonl_rows_are_numbered_by_line_skipping_blank_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\r\n  \n{"a": 3}')
    assert rows_of(path) == [(1, {"a": 1}), (3, {"a": 2}), (5, {"a": 3})]


def test_csv_rows_are_numbered_like_a_spreadsheet(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"two\nlines",a\n\nplain,b\n')
    with open_rows(path) as stream:
        assert stream.columns == ["text", "label"]
        assert list(stream) == [(2, {"text": "two\nlines", "label": "a"}), (5, {"text": "plain", "label": "b"})]


def test_tsv_is_tab_separated(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("text\tlabel\na, b\tx\n")
    assert rows_of(path) == [(2, {"text": "a, b", "label": "x"})]


def test_gzip_is_recognised_by_its_bytes_not_its_name(tmp_path):
    path = tmp_path / "upload-4f2a"  # stored under a generated name, no extension
    path.write_bytes(gzip.compress(b'{"text": "hi"}\n'))
    with open_rows(path) as stream:
        assert (stream.kind, stream.compressed, list(stream)) == ("jsonl", True, [(1, {"text": "hi"})])


def test_json_array_elements_larger_than_a_read_chunk_are_parsed(tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "CHUNK_BYTES", 64)
    rows = [{"text": "x" * 1000, "n": i} for i in range(5)] + [{"n": 12345678}]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(rows))
    assert rows_of(path) == [(i + 1, row) for i, row in enumerate(rows)]


def test_a_number_cut_at_a_chunk_edge_is_read_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "CHUNK_BYTES", 8)
    path = tmp_path / "d.json"
    path.write_text('[{"n": 1}, 123456789012]')
    assert rows_of(path)[1] == RowProblem(2, None, 'element 2 is a number, expected an object such as '
                                                   '{"text": "..."}')


def test_a_json_array_element_that_outgrows_the_window_stops_the_read(tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "CHUNK_BYTES", 1024)
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"text": "a"}, {"text": "x" * 50_000}]))
    last = rows_of(path, max_line_bytes=10_000)[-1]
    assert last.fatal and last.message == ("element 2 (at line 1, column 17) is over the 0.0 MB limit for one row; "
                                           "a JSON array cannot be read past it: save the data as JSONL")


def _row_cut_short(pad: int) -> str:
    return '{"text": "' + "x" * pad + '", "label": "a"'  # the closing brace is missing


def test_a_jsonl_row_cut_short_is_reported_at_the_end_of_its_own_line(tmp_path):
    broken = _row_cut_short(114)  # 139 characters: the "column 140"
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok", "label": "a"}\n' + broken + '\n{"text": "ok", "label": "b"}\n')
    # The column is counted here, independently of the reader: one past the row's last character.
    expected_column = len(broken) + 1
    assert expected_column == 140
    assert rows_of(path)[1] == RowProblem(2, None, f"invalid JSON on line 2, column {expected_column}: "
                                                   "Expecting ',' delimiter")


def test_a_jsonl_syntax_error_mid_line_names_its_column(tmp_path):
    path = tmp_path / "d.jsonl"
    line = '{"text": "' + "y" * 100 + '" "label": "a"}'
    path.write_text(line + "\n")
    column = line.index('"label') + 1  # 1-based: where the missing comma should be
    (problem,) = rows_of(path)
    assert problem.message == f"invalid JSON on line 1, column {column}: Expecting ',' delimiter"


def test_a_json_array_element_cut_short_at_a_line_end_is_reported_there(tmp_path):
    broken = _row_cut_short(120)
    path = tmp_path / "d.json"
    path.write_text('[\n  {"text": "ok", "label": "a"},\n  ' + broken + '\n  {"text": "ok", "label": "b"}\n]\n')
    (_, problem) = rows_of(path)
    assert problem.fatal
    assert problem.message == f"invalid JSON at line 3, column {len(broken) + 3}: Expecting ',' delimiter"


def test_not_utf8_inside_a_json_array_is_fatal(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes(b'[{"text": "caf\xe9"}]')
    (problem,) = rows_of(path)
    assert problem.fatal and problem.message.startswith("the file is not UTF-8: byte 14 (0xe9)")


def test_utf16_files_are_told_to_be_saved_as_utf8(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("text,label\nhi,a\n".encode("utf-16"))
    with pytest.raises(DataError, match="UTF-16"):
        open_rows(path)


def test_duplicate_csv_columns_are_refused(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,text\na,b\n")
    with pytest.raises(DataError, match="names a column twice: text"):
        open_rows(path)


def test_reading_a_large_file_keeps_memory_flat(tmp_path):
    path = tmp_path / "big.jsonl"
    line = json.dumps({"prompt": "p" * 1000, "completion": "c" * 1000}) + "\n"
    path.write_text(line * 5_000)  # about 10 MB
    tracemalloc.start()
    count = sum(1 for _ in open_rows(path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 5_000 and peak < 2 * 2**20


def test_position_reports_progress_through_the_file(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n' * 1000)
    with open_rows(path) as stream:
        next(iter(stream))
        assert 0 < stream.position() <= stream.size == 9000
