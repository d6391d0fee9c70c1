"""Every kind of bad file people upload, each written by its test, sent through the real upload view and validated
by a real worker: each ends with a clear message on the page, and no partial file or half-made dataset row."""
import gzip
import json

import pytest
from django.urls import reverse

from test_datasets_support import jsonl, upload_and_validate
from webapp.datasets.models import Dataset

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]


def page_of(client, dataset) -> str:
    page = client.get(reverse("datasets:detail", args=[dataset.pk])).content.decode()
    assert "Traceback" not in page
    return page


def problems(dataset) -> list[tuple]:
    return [(p["row"], p["field"], p["message"]) for p in dataset.report["problems"]]


def test_a_good_jsonl_file_becomes_ready_with_its_format_and_rows(member_client):
    dataset = upload_and_validate(member_client, "ok.jsonl", jsonl({"prompt": f"Q{i}", "completion": f"A{i}"}
                                                                   for i in range(30)))
    assert (dataset.status, dataset.format, dataset.task, dataset.rows) == ("ready", "prompt_completion",
                                                                           "causal-lm", 30)
    assert dataset.error == "" and dataset.progress == 1.0


def test_a_csv_with_only_a_header_is_invalid_and_says_so(member_client):
    dataset = upload_and_validate(member_client, "header.csv", b"text,label\n")
    assert dataset.status == "invalid"
    assert dataset.error == "the CSV file has a header (text, label) but no data rows"
    assert "has a header (text, label) but no data rows" in page_of(member_client, dataset)


def test_invalid_json_on_line_7_is_reported_on_line_7(member_client):
    lines = [json.dumps({"text": f"row {i}"}) for i in range(1, 11)]
    lines[6] = '{"text": "broken'
    dataset = upload_and_validate(member_client, "seven.jsonl", ("\n".join(lines) + "\n").encode())
    assert dataset.status == "ready" and dataset.rows == 10 and dataset.report["valid_rows"] == 9
    ((row, field, message),) = problems(dataset)
    assert row == 7 and field is None and message.startswith("invalid JSON on line 7")
    page = page_of(member_client, dataset)
    assert '<td class="num">7</td>' in page and "invalid JSON on line 7" in page


def test_a_jsonl_line_of_50_mb_is_reported_without_being_loaded(member_client):
    content = (jsonl([{"text": "short one"}]) + b'{"text": "' + b"x" * (50 * 2**20) + b'"}\n'
               + jsonl([{"text": "short two"}]))
    dataset = upload_and_validate(member_client, "huge-line.jsonl", content)
    assert dataset.status == "ready" and dataset.report["valid_rows"] == 2
    ((row, _, message),) = problems(dataset)
    assert row == 2 and "over the 10.0 MB limit" in message


def test_rows_in_mixed_formats_are_reported_as_mixed(member_client):
    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(8)] + [{"text": "plain text row"}]
    dataset = upload_and_validate(member_client, "mixed.jsonl", jsonl(rows))
    assert dataset.format == "prompt_completion"
    ((row, _, message),) = problems(dataset)
    assert row == 9 and "mixed formats" in message


def test_a_binary_file_renamed_jsonl_is_invalid_with_a_clear_message(member_client):
    dataset = upload_and_validate(member_client, "photo.jsonl", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)
    assert dataset.status == "invalid" and dataset.error == "this is not a text dataset: it looks like a PNG image"
    assert "looks like a PNG image" in page_of(member_client, dataset)


def test_a_latin_1_csv_is_rejected_with_a_message_about_the_encoding(member_client):
    content = "text,label\ncafé crème,food\nbière,drink\n".encode("latin-1")
    dataset = upload_and_validate(member_client, "latin1.csv", content)
    assert dataset.status == "invalid"
    assert "not UTF-8" in dataset.error and "Latin-1" in dataset.error and "Save the file as UTF-8" in dataset.error


def test_a_csv_with_a_bom_and_a_ragged_row_reports_that_row(member_client):
    rows = "".join(f"ticket {i} text,{'billing' if i % 2 else 'shipping'}\n" for i in range(10))
    content = b"\xef\xbb\xbf" + ("text,label\n" + rows + "only one value\n").encode()
    dataset = upload_and_validate(member_client, "ragged.csv", content)
    assert dataset.status == "ready" and dataset.format == "classification" and dataset.report["valid_rows"] == 10
    ((row, _, message),) = problems(dataset)
    assert row == 12 and "has 1 values but the header has 2" in message


def test_a_chat_row_without_an_assistant_message_is_reported(member_client):
    chat = lambda *turns: {"messages": [{"role": r, "content": c} for r, c in turns]}  # noqa: E731
    rows = [chat(("user", "hi"), ("assistant", "hello")), chat(("system", "be nice"), ("user", "anyone there?")),
            chat(("user", "2+2?"), ("assistant", "4"))]
    dataset = upload_and_validate(member_client, "chat.jsonl", jsonl(rows))
    assert dataset.status == "ready" and dataset.format == "chat"
    ((row, field, message),) = problems(dataset)
    assert (row, field) == (2, "messages") and "no assistant message" in message


def test_labels_with_one_example_each_make_the_dataset_invalid(member_client):
    dataset = upload_and_validate(member_client, "labels.jsonl",
                                  jsonl({"text": f"example {i}", "label": f"class {i}"} for i in range(6)))
    assert dataset.status == "invalid"
    assert dataset.error == "every label has only one example: each label needs several examples to learn from"


def test_a_gzip_file_with_an_eval_file_is_validated_together(member_client):
    train = gzip.compress(jsonl({"text": f"ticket {i}", "label": "a" if i % 2 else "b"} for i in range(20)))
    evaluation = jsonl([{"text": "x", "label": "a"}, {"text": "y", "label": "zzz"}])
    dataset = upload_and_validate(member_client, "train.jsonl.gz", train, eval_file=("eval.jsonl", evaluation))
    assert dataset.status == "ready" and dataset.report["compressed"] is True
    assert dataset.report["eval"]["valid_rows"] == 1
    ((row, field, message),) = problems(dataset)
    assert (row, field) == (2, "label") and "does not appear in the training file" in message
    assert dataset.report["problems"][0]["file"] == "eval"


def test_no_bad_file_leaves_a_dataset_stuck_validating(member_client):
    upload_and_validate(member_client, "empty-lines.jsonl", b"\n\n\n   \n")
    assert not Dataset.objects.filter(status="validating").exists()
    dataset = Dataset.objects.get()
    assert dataset.status == "invalid" and dataset.error == "the file is empty"
