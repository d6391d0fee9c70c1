"""The dataset page in Chromium at 1400 px: a file where most rows have problems asks for "Train on the N good
rows" before any job may use it; the column mapping's dropdowns are grouped by format with a hint each; a file
whose format is not recognised says so once."""
import pytest

from jobs_helpers import completion_rows, stored_dataset
from webapp.datasets.models import Dataset
from webapp.teams.models import Team

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
UNRECOGNISED = ("could not recognise the dataset format: the rows have the fields question, answer. Expected one "
                "of: text, prompt/completion. Rename the columns or give a column mapping")


def test_many_bad_rows_need_a_confirmation_and_the_mapping_is_grouped(signed_in, at_width, shoot):
    page = signed_in("lea", "Rows team")
    team = Team.objects.get(name="Rows team")
    mixed = stored_dataset(team, completion_rows(10), task="causal-lm", name="mixed export", report={
        "valid_rows": 5, "rows": 10, "columns": ["prompt", "completion", "answer"], "kind": "jsonl",
        "problems": [{"row": r, "field": "completion", "message": "missing field 'completion'", "file": "train"}
                     for r in range(6, 11)], "problem_count": 5})

    page.goto(f"/datasets/{mixed.pk}/")
    at_width(page, "desktop")
    card = page.locator("#confirm-rows")
    assert "5 of 10 rows have problems" in card.inner_text()
    legends = page.locator("fieldset.mapping-group legend").all_inner_texts()
    assert legends == ["Prompt and completion", "Instruction (Alpaca)", "Text or classification", "Chat"]
    chat = page.locator("fieldset.mapping-group", has_text="Chat")
    assert chat.locator("select").count() == 2 and "ShareGPT" in chat.inner_text()
    assert page.locator("fieldset.mapping-group").first.bounding_box()["width"] < 700  # side by side at 1400 px
    shoot(page, "confirm-desktop")
    with page.expect_navigation():
        card.get_by_role("button", name="Train on the 5 good rows").click()
    assert "Jobs can now train on the 5 good rows" in page.inner_text("main")
    assert page.locator("#confirm-rows").count() == 0
    assert Dataset.objects.get(pk=mixed.pk).good_rows_confirmed

    unknown = stored_dataset(team, completion_rows(3), task="", status="invalid", name="qa", error=UNRECOGNISED,
                             report={"rows": 3, "valid_rows": 0, "columns": ["question", "answer"], "kind": "csv",
                                     "summary": UNRECOGNISED, "problem_count": 1,
                                     "problems": [{"row": None, "field": None, "message": UNRECOGNISED,
                                                   "file": "train"}]})
    page.goto(f"/datasets/{unknown.pk}/")
    assert page.inner_text("main").count("could not recognise the dataset format") == 1
    shoot(page, "unrecognised-once-desktop")
