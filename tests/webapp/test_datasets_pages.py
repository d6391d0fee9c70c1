"""The datasets pages with a real worker behind them: list, samples, the detail report (problems, length histogram,
labels, preview with the loss part), measuring with a base model's tokenizer, column mapping, delete, team scoping."""
import re

import pytest
from django.core.files.storage import default_storage
from django.urls import reverse

from test_datasets_support import jsonl, upload, upload_and_validate, wait_validated
from webapp.catalog.models import BaseModel
from webapp.datasets.models import Dataset

TICKETS = jsonl({"text": f"my {kind} problem number {i} " + "details " * (i % 7), "label": kind}
                for i in range(40) for kind in ("billing", "shipping", "account") if (i + len(kind)) % 3)


def detail_page(client, dataset) -> str:
    return client.get(reverse("datasets:detail", args=[dataset.pk])).content.decode()


@pytest.mark.django_db
def test_the_list_shows_name_format_rows_size_status_creator_and_date(member_client, make_member):
    mine = Dataset.objects.create(team=member_client.user.memberships.get().team, created_by=member_client.user,
                                  name="Tickets", original_filename="t.jsonl", file="datasets/a.jsonl",
                                  size_bytes=2048, status="ready", format="classification", task="classification",
                                  rows=1234)
    other_team = make_member("bob", "Team B").memberships.get().team
    Dataset.objects.create(team=other_team, name="Secret", original_filename="s.jsonl", file="datasets/b.jsonl")
    page = member_client.get(reverse("datasets:list")).content.decode()
    assert "Tickets" in page and "Secret" not in page
    date = mine.created_at.strftime("%Y-%m-%d")
    assert all(shown in page for shown in ("classification", "1234", "2.0\xa0KB", 'class="badge ready"', "alice", date))
    assert "Use sample" not in page


@pytest.mark.django_db
def test_another_teams_dataset_is_not_found_on_any_page(member_client, make_member):
    other = Dataset.objects.create(team=make_member("bob", "Team B").memberships.get().team, name="Secret",
                                   original_filename="s.jsonl", file="datasets/b.jsonl")
    for name in ("detail", "status"):
        assert member_client.get(reverse(f"datasets:{name}", args=[other.pk])).status_code == 404
    for name in ("delete", "analyse", "column_mapping"):
        assert member_client.post(reverse(f"datasets:{name}", args=[other.pk])).status_code == 404
    assert Dataset.objects.filter(pk=other.pk).exists()


@pytest.mark.django_db
def test_a_validating_dataset_page_follows_its_status_endpoint(member_client):
    upload(member_client, "d.jsonl", jsonl([{"text": "hi"}]))
    dataset = Dataset.objects.get()
    status_url = reverse("datasets:status", args=[dataset.pk])
    page = detail_page(member_client, dataset)
    assert f'data-poll="{status_url}"' in page and "datasets.js" in page
    assert member_client.get(status_url).json() == {"id": dataset.pk, "status": "validating", "progress": 0.0,
                                                    "rows": None, "revision": 1, "error": ""}


@pytest.mark.parametrize("sample", ["support-tickets", "instructions"])
@pytest.mark.django_db(transaction=True)
def test_an_empty_team_can_start_from_a_sample_in_one_click(member_client, celery_worker, sample):
    page = member_client.get(reverse("datasets:list")).content.decode()
    assert "No datasets yet" in page and reverse("datasets:use_sample", args=[sample]) in page
    response = member_client.post(reverse("datasets:use_sample", args=[sample]))
    dataset = wait_validated(Dataset.objects.get().pk)
    assert response.url == reverse("datasets:detail", args=[dataset.pk])
    assert dataset.status == "ready" and dataset.rows >= 300 and dataset.report["problem_count"] == 0
    assert "Use sample" not in member_client.get(reverse("datasets:list")).content.decode()


@pytest.mark.django_db
def test_an_unknown_sample_is_refused_with_a_message(member_client):
    response = member_client.post(reverse("datasets:use_sample", args=["nope"]), follow=True)
    assert "There is no sample called" in response.content.decode() and not Dataset.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_classification_report_shows_lengths_labels_and_the_preview(member_client, celery_worker):
    dataset = upload_and_validate(member_client, "tickets.jsonl", TICKETS)
    assert dataset.status == "ready" and dataset.format == "classification"
    page = detail_page(member_client, dataset)
    assert "Estimated token counts (UTF-8 bytes / 4, no tokenizer)" in page
    svg = re.search(r"<svg class=\"chart histogram\".*?</svg>", page, re.S).group(0)
    assert svg.count('<rect class="bar"') == 20 and "estimated token lengths" in svg
    for label, count in dataset.report["labels"].items():
        assert re.search(rf"<td>{label}</td><td class=\"num\">{count}</td>", page)
    assert page.count('class="preview-row"') == 20 and "label <strong>billing</strong>" in page
    assert "Problems" not in page


@pytest.mark.django_db(transaction=True)
def test_the_preview_highlights_the_part_that_counts_toward_the_loss(member_client, celery_worker):
    rows = [{"instruction": f"Add {i} and 2", "input": "", "output": f"{i + 2}"} for i in range(25)]
    dataset = upload_and_validate(member_client, "alpaca.jsonl", jsonl(rows))
    page = detail_page(member_client, dataset)
    assert ('<pre class="preview"><span class="tok">### Instruction:\nAdd 0 and 2\n\n### Response:\n</span>'
            '<span class="tok loss-part">2</span></pre>') in page  # no tokenizer: template text, no token shading
    assert page.count('class="preview-row"') == 20


@pytest.mark.django_db(transaction=True)
def test_measuring_with_a_base_models_tokenizer_counts_real_tokens_and_warns_about_truncation(member_client,
                                                                                             celery_worker):
    dataset = upload_and_validate(member_client, "tickets.jsonl", TICKETS)
    minilm, _ = BaseModel.objects.update_or_create(source="demo/minilm-l6", defaults={
        "name": "MiniLM-L6", "status": "ready", "is_demo": True, "task_types": ["classification"]})
    response = member_client.post(reverse("datasets:analyse", args=[dataset.pk]),
                                  {"analysis_model": minilm.pk, "max_length": 128})
    assert response.status_code == 302
    dataset = wait_validated(dataset.pk)
    assert dataset.revision == 2 and dataset.max_length == 128 and dataset.analysis_model == minilm
    stats = dataset.report["token_stats"]
    assert stats["estimated"] is False and dataset.report["tokenizer"] == "demo/minilm-l6"
    page = detail_page(member_client, dataset)
    assert "Tokens counted with the tokenizer of demo/minilm-l6" in page and "estimated" not in page.lower()
    assert "[CLS]" in page  # the preview shows the tokenizer's own special tokens


@pytest.mark.django_db(transaction=True)
def test_a_chosen_max_length_gives_a_truncation_warning(member_client, celery_worker):
    rows = [{"text": "word " * (100 + 50 * i)} for i in range(10)]  # about 125 to 690 estimated tokens
    dataset = upload_and_validate(member_client, "long.jsonl", jsonl(rows))
    assert dataset.report["truncated_rows"] == 3  # 5 bytes a word / 4: rows of 450 words and more pass 512
    member_client.post(reverse("datasets:analyse", args=[dataset.pk]), {"analysis_model": "", "max_length": 256})
    dataset = wait_validated(dataset.pk)
    assert dataset.report["max_length"] == 256 and dataset.report["truncated_rows"] == 7
    page = detail_page(member_client, dataset)
    assert "7 rows are longer than 256 tokens (estimated) and will be cut in training." in page
    assert "max length 256" in page  # the marker on the histogram


@pytest.mark.django_db
def test_a_max_length_that_is_not_offered_is_refused(member_client):
    upload(member_client, "d.jsonl", jsonl([{"text": "hi"}]))
    dataset = Dataset.objects.get()
    response = member_client.post(reverse("datasets:analyse", args=[dataset.pk]), {"max_length": 7}, follow=True)
    assert "one of the max lengths offered" in response.content.decode()
    assert Dataset.objects.get().revision == 1


@pytest.mark.django_db(transaction=True)
def test_a_column_mapping_chosen_in_the_page_is_stored_and_revalidates(member_client, celery_worker):
    content = "question,answer\n" + "".join(f"What is {i}+1?,{i + 1}\n" for i in range(12))
    dataset = upload_and_validate(member_client, "qa.csv", content.encode())
    assert dataset.status == "invalid" and "could not recognise the dataset format" in dataset.error
    page = detail_page(member_client, dataset)
    assert "Column mapping" in page and "<code>question</code>" in page
    response = member_client.post(reverse("datasets:column_mapping", args=[dataset.pk]),
                                  {"prompt": "question", "completion": "answer"})
    assert response.status_code == 302
    dataset = wait_validated(dataset.pk)
    assert dataset.column_mapping == {"prompt": "question", "completion": "answer"}
    assert (dataset.status, dataset.format, dataset.rows) == ("ready", "prompt_completion", 12)
    assert 'value="question" selected' in detail_page(member_client, dataset)


@pytest.mark.django_db
def test_a_column_mapped_twice_is_refused(member_client):
    upload(member_client, "qa.csv", b"question,answer\nq,a\n")
    dataset = Dataset.objects.get()
    Dataset.objects.filter(pk=dataset.pk).update(report={"columns": ["question", "answer"], "kind": "csv"})
    response = member_client.post(reverse("datasets:column_mapping", args=[dataset.pk]),
                                  {"prompt": "question", "completion": "question"}, follow=True)
    assert "column &#x27;question&#x27; is mapped to more than one field" in response.content.decode()
    assert Dataset.objects.get().column_mapping == {}


@pytest.mark.django_db(transaction=True)
def test_deleting_a_dataset_removes_its_row_and_its_files(member_client):
    upload(member_client, "d.jsonl", jsonl([{"text": "hi"}]), eval_file=("e.jsonl", jsonl([{"text": "yo"}])))
    dataset = Dataset.objects.get()
    names = [dataset.file.name, dataset.eval_file.name]
    response = member_client.post(reverse("datasets:delete", args=[dataset.pk]), follow=True)
    assert "Deleted “d.jsonl”" in response.content.decode()
    assert not Dataset.objects.exists() and not any(default_storage.exists(name) for name in names)


def make_job(dataset, state: str, *, as_eval: bool = False):
    from webapp.jobs.models import Job

    base, _ = BaseModel.objects.get_or_create(source="demo/tiny-lm", defaults={"name": "Tiny LM", "status": "ready"})
    uses = {"dataset": dataset, "eval_dataset": dataset} if as_eval else {"dataset": dataset}
    return Job.objects.create(team=dataset.team, name=f"job {state}", base_model=base, task="causal-lm",
                              state=state, **uses)


@pytest.mark.parametrize("state", ["queued", "running", "validating"])
@pytest.mark.django_db
def test_a_dataset_used_by_an_active_job_cannot_be_deleted_and_the_message_names_it(member_client, state):
    upload(member_client, "d.jsonl", jsonl([{"text": "hi"}]))
    dataset = Dataset.objects.get()
    make_job(dataset, state)
    response = member_client.post(reverse("datasets:delete", args=[dataset.pk]), follow=True)
    page = response.content.decode()
    assert f"cannot be deleted: 1 active job uses it (“job {state}” ({state}))" in page
    assert Dataset.objects.exists() and default_storage.exists(dataset.file.name)


@pytest.mark.django_db
def test_a_dataset_kept_by_finished_jobs_says_which(member_client):
    upload(member_client, "d.jsonl", jsonl([{"text": "hi"}]))
    dataset = Dataset.objects.get()
    make_job(dataset, "succeeded")
    page = member_client.post(reverse("datasets:delete", args=[dataset.pk]), follow=True).content.decode()
    assert "1 finished job uses it (“job succeeded” (succeeded)). Delete those jobs first." in page
    assert Dataset.objects.exists() and default_storage.exists(dataset.file.name)


@pytest.mark.django_db
def test_a_user_without_a_team_is_sent_to_the_dashboard_with_a_message(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("loner", password="pw-for-tests-1"))
    for url in (reverse("datasets:list"), reverse("datasets:upload")):
        response = client.get(url, follow=True)
        assert response.redirect_chain == [(reverse("dashboard"), 302)]
        assert "You are not in a team yet. Ask an administrator" in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_an_unrecognised_format_is_said_once_even_after_a_mapping(member_client, celery_worker):
    content = "question,answer\n" + "".join(f"What is {i}+1?,{i + 1}\n" for i in range(12))
    dataset = upload_and_validate(member_client, "qa.csv", content.encode())
    assert detail_page(member_client, dataset).count("could not recognise the dataset format") == 1
    member_client.post(reverse("datasets:column_mapping", args=[dataset.pk]), {"prompt": "question"})
    dataset = wait_validated(dataset.pk)
    assert dataset.status == "invalid" and dataset.column_mapping == {"prompt": "question"}
    assert detail_page(member_client, dataset).count("could not recognise the dataset format") == 1


@pytest.mark.django_db
def test_the_column_mapping_form_groups_its_fields_by_format_with_a_hint(member_client):
    upload(member_client, "qa.csv", b"question,answer\nq,a\n")
    dataset = Dataset.objects.get()
    Dataset.objects.filter(pk=dataset.pk).update(report={"columns": ["question", "answer"], "kind": "csv"})
    page = detail_page(member_client, dataset)
    groups = re.findall(r'<fieldset class="mapping-group">\s*<legend>([^<]+)</legend>\s*<p class="muted small">'
                        r'([^<]+)</p>(.*?)</fieldset>', page, re.S)
    fields = {legend: (hint, re.findall(r'<select name="(\w+)"', body)) for legend, hint, body in groups}
    assert {legend: names for legend, (_, names) in fields.items()} == {
        "Prompt and completion": ["prompt", "completion"],
        "Instruction (Alpaca)": ["instruction", "input", "output"],
        "Text or classification": ["text", "label"],
        "Chat": ["messages", "conversations"]}
    assert "input is optional" in fields["Instruction (Alpaca)"][0]
    assert "with a label trains a classifier" in fields["Text or classification"][0]


MIXED = jsonl([{"prompt": f"Say {i}", "completion": f" {i}"} for i in range(5)]
              + [{"prompt": f"Say {i}", "answer": f" {i}"} for i in range(5, 10)])  # half use another column name


@pytest.mark.django_db(transaction=True)
def test_a_file_with_many_bad_rows_trains_only_after_confirming_its_good_rows(member_client, celery_worker,
                                                                              tmp_path):
    from jobs_helpers import tiny_entry
    from test_jobs_pages import form_data
    from webapp.jobs.forms import JobForm

    dataset = upload_and_validate(member_client, "mixed.jsonl", MIXED)
    assert (dataset.status, dataset.rows, dataset.good_rows, dataset.bad_rows) == ("ready", 10, 5, 5)
    assert dataset.needs_row_confirmation
    page = detail_page(member_client, dataset)
    assert "5 of 10 rows have problems" in page and "Train on the 5 good rows" in page
    assert "confirm rows" in member_client.get(reverse("datasets:list")).content.decode()

    llama = tiny_entry("llama", tmp_path / "llama")
    refused = member_client.post(reverse("jobs:create"), form_data(llama, dataset))
    assert refused.status_code == 200
    assert refused.context["form"].errors["dataset"] == [
        "mixed.jsonl: 5 of 10 rows (50 %) have problems, which is usually a column mapping or export mistake. "
        "Check its problems, or confirm “Train on the 5 good rows” on its page."]

    response = member_client.post(reverse("datasets:confirm_rows", args=[dataset.pk]), follow=True)
    assert "Jobs can now train on the 5 good rows" in response.content.decode()
    dataset.refresh_from_db()
    assert dataset.good_rows_confirmed and not dataset.needs_row_confirmation
    assert "Train on the 5 good rows" not in detail_page(member_client, dataset)
    confirmed = JobForm(form_data(llama, dataset), datasets=Dataset.objects.filter(pk=dataset.pk))
    assert confirmed.is_valid(), confirmed.errors

    member_client.post(reverse("datasets:analyse", args=[dataset.pk]), {"analysis_model": "", "max_length": 256})
    assert wait_validated(dataset.pk).needs_row_confirmation  # a new report asks again
