"""/api/datasets against a live server with a real worker: multipart upload, validation to ready or invalid,
the row errors, listing, another team's 404s, delete, and every refusal (400, 413) in the API's JSON shape."""
import json

import pytest
from django.core.files.storage import default_storage

from test_api_schema import api, assert_matches_schema, other_api  # noqa: F401  (fixtures)
from webapp.datasets.models import Dataset

pytestmark = pytest.mark.usefixtures("celery_worker")

ROWS = [{"prompt": f"What is {i} plus {i}?", "completion": f"{2 * i}"} for i in range(20)]


def write(tmp_path, name: str, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def jsonl(rows) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def upload_ready(api, tmp_path, rows=ROWS, name="sums") -> dict:
    created = api("POST", "/api/datasets", fields={"name": name},
                  files={"file": write(tmp_path, f"{name}.jsonl", jsonl(rows))})
    assert created.status_code == 201, created.content
    return api.wait_for(f"/api/datasets/{created.json()['id']}", lambda d: d["status"] != "validating")


def test_an_upload_is_validated_by_the_worker_and_becomes_ready(api, tmp_path):
    created = api("POST", "/api/datasets", fields={"name": "sums"},
                  files={"file": write(tmp_path, "sums.jsonl", jsonl(ROWS))})
    assert created.status_code == 201
    assert_matches_schema(created, "/api/datasets", "post")
    assert created.json()["status"] == "validating"
    dataset_id = created.json()["id"]
    detail = api.wait_for(f"/api/datasets/{dataset_id}", lambda d: d["status"] != "validating")
    assert (detail["status"], detail["format"], detail["task"], detail["rows"]) == (
        "ready", "prompt_completion", "causal-lm", 20)
    assert detail["errors"] == [] and detail["stats"]["valid_rows"] == 20
    assert_matches_schema(api("GET", f"/api/datasets/{dataset_id}"), "/api/datasets/{dataset_id}")
    stored = Dataset.objects.get(pk=dataset_id)
    assert stored.original_filename == "sums.jsonl" and stored.file.name.startswith("datasets/")
    assert default_storage.open(stored.file.name).read() == jsonl(ROWS)


def test_bad_rows_are_reported_with_row_numbers(api, tmp_path):
    content = jsonl(ROWS[:3]) + b'{"prompt": "broken\n' + jsonl([{"prompt": "no answer"}])
    created = api("POST", "/api/datasets", files={"file": write(tmp_path, "bad.jsonl", content)})
    detail = api.wait_for(f"/api/datasets/{created.json()['id']}", lambda d: d["status"] != "validating")
    rows_with_errors = {e["row"] for e in detail["errors"]}
    assert 4 in rows_with_errors and all(e["message"] for e in detail["errors"])


def test_a_file_with_no_usable_rows_is_invalid(api, tmp_path):
    created = api("POST", "/api/datasets", files={"file": write(tmp_path, "empty.csv", b"text,label\n")})
    detail = api.wait_for(f"/api/datasets/{created.json()['id']}", lambda d: d["status"] != "validating")
    assert detail["status"] == "invalid" and "no data rows" in detail["error"]


def test_a_column_mapping_is_applied(api, tmp_path):
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(10)]
    created = api("POST", "/api/datasets", fields={"column_mapping": json.dumps({"prompt": "question",
                                                                                 "completion": "answer"})},
                  files={"file": write(tmp_path, "qa.jsonl", jsonl(rows))})
    assert created.status_code == 201
    detail = api.wait_for(f"/api/datasets/{created.json()['id']}", lambda d: d["status"] != "validating")
    assert detail["status"] == "ready" and detail["rows"] == 10
    assert detail["column_mapping"] == {"prompt": "question", "completion": "answer"}


@pytest.mark.parametrize("fields, files, field", [
    ({"name": "no file"}, None, "file"),
    ({}, {"file": "notes.docx"}, "file"),
    ({"column_mapping": "{not json"}, {"file": "ok.jsonl"}, "column_mapping"),
    ({"column_mapping": '{"colour": "x"}'}, {"file": "ok.jsonl"}, "column_mapping"),
])
def test_bad_uploads_are_400_naming_the_field_and_store_nothing(api, tmp_path, fields, files, field):
    files = {k: write(tmp_path, v, jsonl(ROWS[:2])) for k, v in (files or {}).items()}
    response = api("POST", "/api/datasets", fields=fields, files=files)
    assert response.status_code == 400 and response.json()["error"]["field"] == field
    assert_matches_schema(response, "/api/datasets", "post")
    assert not Dataset.objects.exists()


def test_a_json_body_instead_of_multipart_is_400(api):
    response = api("POST", "/api/datasets", json_body={"file": "x"})
    assert response.status_code == 400 and response.json()["error"]["field"] == "file"


def test_a_file_over_the_limit_is_413_and_nothing_is_kept(api, tmp_path, settings):
    settings.MAX_UPLOAD_MB = 1
    big = jsonl([{"text": "x" * 1000}] * 1100)  # about 1.1 MB
    before = stored_files()
    response = api("POST", "/api/datasets", files={"file": write(tmp_path, "big.jsonl", big)})
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"
    assert_matches_schema(response, "/api/datasets", "post")
    assert not Dataset.objects.exists()
    assert stored_files() == before


def stored_files() -> set:
    return set(default_storage.listdir("datasets")[1]) if default_storage.exists("datasets") else set()


def test_lists_and_lookups_see_only_the_tokens_team(api, other_api, tmp_path):
    mine = upload_ready(api, tmp_path, name="mine")
    theirs = upload_ready(other_api, tmp_path, name="theirs")
    listed = api("GET", "/api/datasets")
    assert_matches_schema(listed, "/api/datasets")
    assert [d["name"] for d in listed.json()["items"]] == ["mine"]
    for method in ("GET", "DELETE"):
        response = api(method, f"/api/datasets/{theirs['id']}")
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
        assert_matches_schema(response, "/api/datasets/{dataset_id}", method)
    assert Dataset.objects.filter(pk=theirs["id"]).exists()
    assert api("GET", f"/api/datasets/{mine['id']}").status_code == 200


def test_deleting_a_dataset_removes_the_row_and_its_file(api, tmp_path):
    dataset = upload_ready(api, tmp_path)
    stored = Dataset.objects.get(pk=dataset["id"]).file.name
    response = api("DELETE", f"/api/datasets/{dataset['id']}")
    assert response.status_code == 204 and response.content == b""
    assert api("GET", f"/api/datasets/{dataset['id']}").status_code == 404
    assert not default_storage.exists(stored)


def test_every_part_the_schema_lists_is_taken_and_an_unknown_part_is_400(api, tmp_path):
    evaluation = [{"prompt": f"What is {i} plus 1?", "completion": f"{i + 1}"} for i in range(5)]
    created = api("POST", "/api/datasets", fields={"name": "with eval", "column_mapping": "{}"},
                  files={"file": write(tmp_path, "train.jsonl", jsonl(ROWS)),
                         "eval_file": write(tmp_path, "held.jsonl", jsonl(evaluation))})
    assert created.status_code == 201, created.content
    stored = Dataset.objects.get(pk=created.json()["id"])
    assert stored.name == "with eval" and stored.eval_original_filename == "held.jsonl"
    assert default_storage.open(stored.eval_file.name).read() == jsonl(evaluation)
    extra = api("POST", "/api/datasets", fields={"colour": "blue"}, files={"file": write(tmp_path, "x.jsonl",
                                                                                           jsonl(ROWS))})
    assert extra.status_code == 400 and extra.json()["error"]["field"] == "colour"
    assert "name, file, eval_file, column_mapping" in extra.json()["error"]["message"]
    assert_matches_schema(extra, "/api/datasets", "post")
    assert Dataset.objects.count() == 1


def test_a_column_mapped_to_two_fields_is_400_like_on_the_page(api, tmp_path):
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(10)]
    response = api("POST", "/api/datasets", fields={"column_mapping": json.dumps({"prompt": "question",
                                                                                  "instruction": "question"})},
                   files={"file": write(tmp_path, "qa.jsonl", jsonl(rows))})
    assert response.status_code == 400 and response.json()["error"]["field"] == "column_mapping"
    assert "column 'question' is mapped to more than one field (prompt, instruction)" in \
        response.json()["error"]["message"]
    assert not Dataset.objects.exists()


def test_row_errors_say_which_file_they_are_in(api, tmp_path):
    broken_eval = b'{"prompt": "no answer"}\n' * 3
    created = api("POST", "/api/datasets", files={"file": write(tmp_path, "t.jsonl", jsonl(ROWS)),
                                                  "eval_file": write(tmp_path, "e.jsonl", broken_eval)})
    detail = api.wait_for(f"/api/datasets/{created.json()['id']}", lambda d: d["status"] != "validating")
    assert {e["file"] for e in detail["errors"]} == {"eval"} and {e["row"] for e in detail["errors"]} == {1, 2, 3}
    assert_matches_schema(api("GET", f"/api/datasets/{created.json()['id']}"), "/api/datasets/{dataset_id}")


def test_a_dataset_only_finished_jobs_use_is_kept_with_the_pages_message(api, tmp_path):
    from jobs_helpers import make_job
    from webapp.catalog.models import BaseModel
    from webapp.teams.models import Team

    dataset = upload_ready(api, tmp_path)
    model = BaseModel.objects.create(name="m", source="org/m", status="ready")
    job = make_job(Team.objects.get(name="Team A"), model, Dataset.objects.get(pk=dataset["id"]), state="succeeded",
                   name="job succeeded")
    response = api("DELETE", f"/api/datasets/{dataset['id']}")
    assert response.status_code == 409, response.content
    assert response.json()["error"]["message"].endswith(
        f"1 finished job uses it (“{job.name}” (succeeded)). Delete those jobs first.")
    assert_matches_schema(response, "/api/datasets/{dataset_id}", "delete")
    assert Dataset.objects.filter(pk=dataset["id"]).exists()


def test_a_file_with_many_bad_rows_needs_confirm_rows_before_a_job_can_use_it(api, other_api, tmp_path):
    from jobs_helpers import tiny_entry

    rows = ROWS[:6] + [{"prompt": "no answer"}] * 4  # 4 of 10 rows bad: over the 20 % limit
    detail = upload_ready(api, tmp_path, rows, name="mixed")
    assert (detail["status"], detail["good_rows"], detail["bad_rows"], detail["needs_confirmation"]) == (
        "ready", 6, 4, True)
    llama = tiny_entry("llama", tmp_path / "llama")
    job = {"base_model": llama.pk, "dataset": detail["id"], "training": {"max_steps": 1}}
    refused = api("POST", "/api/jobs", json_body=job)
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "dataset"
    assert refused.json()["error"]["message"] == (
        "dataset: mixed: 4 of 10 rows (40 %) have problems, which is usually a column mapping or export mistake. "
        "Check its problems, or confirm “Train on the 6 good rows” on its page.")

    assert other_api("POST", f"/api/datasets/{detail['id']}/confirm-rows").status_code == 404
    confirmed = api("POST", f"/api/datasets/{detail['id']}/confirm-rows")
    assert confirmed.status_code == 200 and confirmed.json()["needs_confirmation"] is False
    assert_matches_schema(confirmed, "/api/datasets/{dataset_id}/confirm-rows", "post")
    assert Dataset.objects.get(pk=detail["id"]).good_rows_confirmed


def test_confirming_rows_of_a_dataset_that_is_not_ready_is_a_409(api, tmp_path):
    created = api("POST", "/api/datasets", files={"file": write(tmp_path, "empty.csv", b"text,label\n")})
    api.wait_for(f"/api/datasets/{created.json()['id']}", lambda d: d["status"] != "validating")
    refused = api("POST", f"/api/datasets/{created.json()['id']}/confirm-rows")
    assert refused.status_code == 409 and "only a ready dataset" in refused.json()["error"]["message"]
