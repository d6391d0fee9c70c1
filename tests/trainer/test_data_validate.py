"""validate_file: every bad input from the issues gives a clear row-level or file-level message, never a traceback."""
from __future__ import annotations

import gzip
import json
import tracemalloc

from data_helpers import chat, write_csv, write_jsonl
from tiny_models import tiny_tokenizer
from trainer.data.validate import histogram, token_stats, validate_file

GOOD_PC = [{"prompt": f"{i}+{i}=", "completion": str(2 * i)} for i in range(10)]


def test_empty_file_is_unusable_with_a_clear_message(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    report = validate_file(path)
    assert not report.usable
    assert report.summary == "the file is empty"
    assert report.problems == [{"row": None, "field": None, "message": "the file is empty", "file": "train"}]


def test_whitespace_only_file_is_empty(tmp_path):
    path = tmp_path / "blank.jsonl"
    path.write_text("\n \n\t\n")
    assert validate_file(path).summary == "the file is empty"


def test_csv_with_only_a_header_says_it_has_no_data_rows(tmp_path):
    report = validate_file(write_csv(tmp_path / "header.csv", ["text", "label"], []))
    assert not report.usable
    assert report.summary == "the CSV file has a header (text, label) but no data rows"
    assert report.columns == ["text", "label"]


def test_invalid_json_on_line_7_is_reported_on_line_7(tmp_path):
    lines = [json.dumps(row) for row in GOOD_PC[:6]] + ['{"prompt": "7+7=", "completion": "14"'] + \
            [json.dumps(row) for row in GOOD_PC[6:]]
    report = validate_file(write_jsonl(tmp_path / "broken.jsonl", lines))
    assert report.problem_count == 1
    assert report.problems[0]["row"] == 7
    assert report.problems[0]["message"].startswith("invalid JSON on line 7")
    assert (report.rows, report.valid_rows, report.usable) == (11, 10, True)


def test_a_50_mb_line_is_skipped_and_reported_without_loading_it_whole(tmp_path):
    path = tmp_path / "huge.jsonl"
    with open(path, "w") as out:
        out.write(json.dumps(GOOD_PC[0]) + "\n")
        out.write('{"prompt": "' + "x" * (50 * 2**20) + '", "completion": "y"}\n')
        out.write(json.dumps(GOOD_PC[1]) + "\n")
    tracemalloc.start()
    report = validate_file(path, max_line_bytes=4 * 2**20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 12 * 2**20, f"peak {peak / 2**20:.1f} MB: the long line was held in memory"
    assert report.problems == [{"row": 2, "field": None, "file": "train",
                                "message": "line 2 is 50.0 MB, over the 4.0 MB limit for one row; it was skipped"}]
    assert (report.valid_rows, report.usable) == (2, True)


def test_rows_of_another_format_are_reported_as_mixed_formats(tmp_path):
    rows = GOOD_PC[:5] + [chat(("user", "hi"), ("assistant", "hello"))] + GOOD_PC[5:]
    report = validate_file(write_jsonl(tmp_path / "mixed.jsonl", rows))
    assert report.format == "prompt_completion"
    assert report.problems[0]["row"] == 6
    assert "mixed formats" in report.problems[0]["message"]
    assert "chat" in report.problems[0]["message"]


def test_a_binary_file_renamed_jsonl_is_rejected(tmp_path):
    path = tmp_path / "model.jsonl"
    path.write_bytes(bytes(range(256)) * 64)
    report = validate_file(path)
    assert not report.usable
    assert report.summary == "this file is binary (it contains NUL bytes), not JSONL, JSON or CSV text"


def test_an_excel_file_renamed_csv_says_what_it_is(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"PK\x03\x04" + b"\x14\x00" * 100)
    assert "ZIP archive (an Excel .xlsx file?)" in validate_file(path).summary


def test_latin1_csv_is_rejected_naming_the_line_byte_and_encoding(tmp_path):
    path = write_csv(tmp_path / "latin1.csv", ["text", "label"],
                     [["fine row", "a"], ["caf\u00e9 ferm\u00e9", "b"], ["ok", "a"]], encoding="latin-1")
    report = validate_file(path)
    assert not report.usable
    offset = path.read_bytes().index(b"\xe9")
    expected = (f"the file is not UTF-8: byte {offset} (0xe9) on line 3 cannot be decoded; it looks like "
                "Latin-1 / Windows-1252 text. Save the file as UTF-8 and upload it again")
    assert report.problems == [{"row": 3, "field": None, "message": expected, "file": "train"}]
    assert report.summary == expected


def test_utf8_csv_with_a_bom_reads_its_first_column_name_cleanly(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\nhello,a\nbye,b\nhey,a\nciao,b\n")
    report = validate_file(path)
    assert report.columns == ["text", "label"]
    assert (report.format, report.valid_rows, report.labels) == ("classification", 4, {"a": 2, "b": 2})


def test_ragged_csv_row_is_reported_with_its_spreadsheet_row_number(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text('prompt,completion\n"a\nb",c\nd,e,f\ng,h\n')
    report = validate_file(path)
    # The quoted newline makes the record on lines 2-3 one row; the ragged record starts on line 4.
    assert report.problems[0]["row"] == 4
    assert report.problems[0]["message"] == "row 4 has 3 values but the header has 2 columns (prompt, completion)"
    assert report.valid_rows == 2


def test_chat_row_without_an_assistant_message_is_reported(tmp_path):
    rows = [chat(("user", "hi"), ("assistant", "hello")), chat(("system", "be brief"), ("user", "hi"))]
    report = validate_file(write_jsonl(tmp_path / "chat.jsonl", rows))
    assert report.problems == [{"row": 2, "field": "messages", "file": "train",
                                "message": "no assistant message: there is no reply for the model to learn"}]


def test_unknown_role_names_the_message_and_the_allowed_roles(tmp_path):
    rows = [chat(("user", "hi"), ("assistant", "hello")), chat(("user", "hi"), ("robot", "beep"))]
    report = validate_file(write_jsonl(tmp_path / "roles.jsonl", rows))
    assert report.problems[0]["field"] == "messages[1].role"
    assert report.problems[0]["message"] == "message 2 has unknown role 'robot'; use system, user or assistant"


def test_sharegpt_conversations_are_read_as_chat(tmp_path):
    row = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    bad = {"conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "x"}]}
    report = validate_file(write_jsonl(tmp_path / "sharegpt.jsonl", [row, bad]))
    assert report.format == "chat" and report.valid_rows == 1
    assert report.problems[0]["message"] == "message 2 has unknown role 'bot'; use human, gpt or system"


def test_missing_field_wrong_type_and_empty_text_are_each_named(tmp_path):
    rows = [{"prompt": "a", "completion": "b"}, {"prompt": "a"}, {"prompt": "a", "completion": ["b"]},
            {"prompt": " ", "completion": "b"}, {"prompt": "a", "completion": "b"}]
    report = validate_file(write_jsonl(tmp_path / "fields.jsonl", rows))
    assert [(p["row"], p["field"], p["message"]) for p in report.problems] == [
        (2, "completion", "missing field 'completion'"),
        (3, "completion", "'completion' must be text, got a list"),
        (4, "prompt", "'prompt' is empty"),
    ]


def test_labels_with_one_example_each_make_the_file_unusable(tmp_path):
    rows = [{"text": f"ticket {i}", "label": f"team{i}"} for i in range(6)]
    report = validate_file(write_jsonl(tmp_path / "labels.jsonl", rows))
    assert not report.usable
    assert report.summary == "every label has only one example: each label needs several examples to learn from"


def test_a_few_single_example_labels_are_a_warning(tmp_path):
    rows = [{"text": f"t{i}", "label": "a" if i % 2 else "b"} for i in range(10)] + [{"text": "x", "label": "rare"}]
    report = validate_file(write_jsonl(tmp_path / "labels.jsonl", rows))
    assert report.usable and report.labels == {"a": 5, "b": 5, "rare": 1}
    assert report.warnings == ["1 labels have only one example ('rare'); they cannot be both learned and "
                               "evaluated: add examples or merge them"]


def test_a_single_label_cannot_train_a_classifier(tmp_path):
    rows = [{"text": f"t{i}", "label": "same"} for i in range(4)]
    report = validate_file(write_jsonl(tmp_path / "one.jsonl", rows))
    assert not report.usable and "needs at least two labels" in report.summary


def test_eval_label_unseen_in_training_is_reported_in_the_eval_file(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(8)])
    evaluation = write_jsonl(tmp_path / "eval.jsonl", [{"text": "x", "label": "a"}, {"text": "y", "label": "c"}])
    report = validate_file(train, eval_path=evaluation)
    assert report.problems == [{"row": 2, "field": "label", "file": "eval",
                                "message": "label 'c' does not appear in the training file"}]
    assert report.eval == {"rows": 2, "valid_rows": 1, "problem_count": 1, "fatal": None, "labels": {"a": 1}}
    assert report.usable


def test_gzip_jsonl_is_read_transparently(tmp_path):
    report = validate_file(write_jsonl(tmp_path / "data.jsonl.gz", GOOD_PC, compress=True))
    assert report.compressed and report.kind == "jsonl"
    assert (report.valid_rows, report.usable) == (10, True)


def test_a_truncated_gzip_file_is_a_clear_fatal_problem(tmp_path):
    data = gzip.compress(("\n".join(json.dumps(row) for row in GOOD_PC * 200)).encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    report = validate_file(path)
    assert not report.usable
    assert report.summary.startswith("the compressed file is damaged or cut short")


def test_json_array_is_streamed_and_numbered_by_element(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(GOOD_PC[:3] + [{"prompt": "a"}] + GOOD_PC[3:], indent=2))
    report = validate_file(path)
    assert report.kind == "json"
    assert report.problems == [{"row": 4, "field": "completion", "message": "missing field 'completion'",
                                "file": "train"}]
    assert report.valid_rows == 10


def test_broken_json_array_reports_the_line_of_the_error(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('[\n{"text": "a"},\n{"text": "b"},\n{"text": "c",}\n]')
    report = validate_file(path)
    assert not report.usable
    assert report.summary.startswith("invalid JSON at line 4")
    assert report.valid_rows == 2


def test_json_row_that_is_not_an_object_is_reported(tmp_path):
    report = validate_file(write_jsonl(tmp_path / "list.jsonl", ['["a", "b"]', '{"text": "fine"}']))
    assert report.problems[0]["message"] == 'line 1 is a list, expected an object such as {"text": "..."}'


def test_unrecognised_columns_are_listed_and_a_mapping_fixes_them(tmp_path):
    path = write_csv(tmp_path / "qa.csv", ["question", "answer"], [["2+2?", "4"], ["3+3?", "6"]])
    report = validate_file(path)
    assert not report.usable
    assert "the rows have the fields question, answer" in report.summary
    assert report.columns == ["question", "answer"]
    mapped = validate_file(path, column_mapping={"prompt": "question", "completion": "answer"})
    assert (mapped.format, mapped.valid_rows, mapped.usable) == ("prompt_completion", 2, True)


def test_unrecognised_jsonl_rows_still_list_their_fields(tmp_path):
    report = validate_file(write_jsonl(tmp_path / "qa.jsonl", [{"q": "2+2?", "a": "4"}]))
    assert not report.usable and report.columns == ["q", "a"]


def test_problems_name_the_files_own_column_under_a_mapping(tmp_path):
    path = write_csv(tmp_path / "qa.csv", ["question", "answer"], [["2+2?", "4"], ["3+3?", ""]])
    report = validate_file(path, column_mapping={"prompt": "question", "completion": "answer"})
    assert report.problems == [{"row": 3, "field": "answer", "message": "'answer' is empty", "file": "train"}]


def test_only_the_first_problems_are_listed_but_all_are_counted(tmp_path):
    rows = [{"prompt": "a", "completion": "b"}] + [{"prompt": "a"}] * 120
    report = validate_file(write_jsonl(tmp_path / "many.jsonl", rows), max_problems=50)
    assert len(report.problems) == 50 and report.problem_count == 120
    assert report.rows == 121 and report.valid_rows == 1


def test_token_lengths_and_truncation_use_the_tokenizer_when_given(tmp_path):
    # Byte-level tokenizer: one token per byte, plus EOS.
    rows = [{"text": "t" * n} for n in (5, 12, 40, 70)]
    report = validate_file(write_jsonl(tmp_path / "lengths.jsonl", rows), tokenizer=tiny_tokenizer(),
                           max_length=32)
    expected = [n + 1 for n in (5, 12, 40, 70)]
    assert report.token_stats == {"min": expected[0], "median": expected[1], "p95": expected[3],
                                  "max": expected[3], "mean": round(sum(expected) / 4, 1), "estimated": False,
                                  "method": "tokenizer"}
    assert report.truncated_rows == 2  # 41 and 71 tokens
    assert report.warnings == ["2 rows are longer than max_length=32 tokens and will be cut"]


def test_without_a_tokenizer_lengths_are_labelled_as_estimates(tmp_path):
    report = validate_file(write_jsonl(tmp_path / "est.jsonl", [{"text": "x" * 40}, {"text": "y" * 8}]))
    assert report.token_stats["estimated"] and report.token_stats["method"] == "UTF-8 bytes / 4"
    assert (report.token_stats["min"], report.token_stats["max"]) == (2, 10)


def test_a_prompt_longer_than_max_length_leaves_nothing_to_learn(tmp_path):
    rows = [{"prompt": "p" * 50, "completion": "c"}, {"prompt": "p", "completion": "c"}]
    report = validate_file(write_jsonl(tmp_path / "long.jsonl", rows), tokenizer=tiny_tokenizer(), max_length=16)
    assert report.problems[0]["row"] == 1 and "nothing is left to learn" in report.problems[0]["message"]
    assert (report.rows, report.valid_rows) == (2, 1)


def test_preview_marks_the_completion_as_the_part_that_counts(tmp_path):
    rows = [chat(("user", "hi"), ("assistant", "hello"))]
    report = validate_file(write_jsonl(tmp_path / "chat.jsonl", rows), tokenizer=tiny_tokenizer())
    (preview,) = report.preview
    assert preview["row"] == 1 and not preview["truncated"]
    segments = preview["segments"]  # one per token, so the page can draw their boundaries
    assert "".join(s["text"] for s in segments if not s["loss"]) == "<|user|>\nhi\n<|assistant|>\n"
    assert "".join(s["text"] for s in segments if s["loss"]) == "hello</s>\n"
    assert [s["loss"] for s in segments] == sorted(s["loss"] for s in segments)  # the counted part comes last
    assert len(segments) == preview["tokens"]


def test_classification_preview_and_label_counts(tmp_path):
    rows = [{"text": "refund please", "label": "billing"}, {"text": "app crashed", "label": "bug"},
            {"text": "charged twice", "label": "billing"}, {"text": "error 500", "label": 7}]
    report = validate_file(write_jsonl(tmp_path / "cls.jsonl", rows), preview_rows=2)
    assert report.labels == {"7": 1, "billing": 2, "bug": 1}
    assert [p["label"] for p in report.preview] == ["billing", "bug"]
    assert report.preview[0]["segments"] == [{"text": "refund please", "loss": False}]


def test_the_report_is_plain_json(tmp_path):
    report = validate_file(write_jsonl(tmp_path / "ok.jsonl", GOOD_PC))
    assert json.loads(json.dumps(report.to_dict()))["valid_rows"] == 10


def test_token_stats_use_nearest_rank_quantiles():
    from collections import Counter

    lengths = Counter(range(1, 101))  # 1..100 once each
    stats = token_stats(lengths, estimated=False)
    assert (stats["min"], stats["median"], stats["p95"], stats["max"], stats["mean"]) == (1, 50, 95, 100, 50.5)


def test_histogram_bins_cover_every_row():
    from collections import Counter

    lengths = Counter({1: 3, 19: 2, 40: 5})
    chart = histogram(lengths, max_length=32, bins=4)
    assert chart["edges"] == [0, 10, 20, 30, 40]
    assert chart["counts"] == [3, 2, 0, 5] and sum(chart["counts"]) == 10


def test_validating_a_large_file_keeps_memory_flat(tmp_path):
    row = {"prompt": "p" * 1000, "completion": "c" * 1000}
    path = write_jsonl(tmp_path / "big.jsonl", [row] * 5_000)  # about 10 MB
    tracemalloc.start()
    report = validate_file(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert report.valid_rows == 5_000 and peak < 3 * 2**20


def test_a_file_of_only_broken_lines_is_judged_without_holding_them_all(tmp_path, monkeypatch):
    monkeypatch.setattr("trainer.data.validate.DETECTION_SCAN_ITEMS", 50)
    report = validate_file(write_jsonl(tmp_path / "junk.jsonl", ["not json"] * 200 + ['{"text": "late"}']))
    assert not report.usable and report.format is None
    assert report.problem_count == 50 and report.summary == "no row could be read: see the problems"
