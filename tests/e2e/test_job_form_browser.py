"""The new job form in Chromium, at 1400 and 390 px: it starts from a model that fits the dataset (MiniLM is not
offered for a chat set), follows a change of dataset, shows every refused setting at once with its label, and its
rank hint states the engine's real rule."""
import pytest

from jobs_helpers import classification_rows, completion_rows, stored_dataset, tiny_entry
from webapp.teams.models import Team

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    return tmp_path_factory.mktemp("form-tiny-models")


def test_the_form_offers_fitting_models_and_lists_every_error_with_labels(signed_in, at_width, shoot, tiny_dirs):
    page = signed_in("hana", "Form team")
    team = Team.objects.get(name="Form team")
    encoder = tiny_entry("bert", tiny_dirs / "bert")  # listed first: the form's old default whatever the dataset
    encoder.name, encoder.task_types = "a tiny encoder", ["classification"]
    encoder.save()
    decoder = tiny_entry("llama", tiny_dirs / "llama")
    decoder.task_types = ["causal-lm"]
    decoder.save()
    tickets = stored_dataset(team, classification_rows(), task="classification", name="Tickets")
    chat = stored_dataset(team, completion_rows(), task="causal-lm", name="Capitals")  # newest: first in the form

    page.goto("/jobs/new/")
    assert page.input_value("#id_dataset") == str(chat.pk)
    assert page.inner_text("#id_base_model option:checked").startswith("tiny llama")
    assert page.locator("#id_base_model option:disabled").all_inner_texts() == ["a tiny encoder"]
    page.select_option("#id_dataset", str(tickets.pk))
    assert page.input_value("#id_base_model") == str(encoder.pk)
    assert page.locator("#id_base_model option:disabled").all_inner_texts() == ["tiny llama"]
    page.select_option("#id_dataset", str(chat.pk))
    page.wait_for_selector('#job-form[data-advised="2"]', state="attached")  # the advisor's values are in
    assert page.inner_text("#id_base_model option:checked").startswith("tiny llama")
    assert "A whole number from 1 to 1,024" in page.inner_text("#field-rank .help")

    page.fill("#id_rank", "2000")
    page.fill("#id_lr", "5")
    page.fill("#id_max_length", "4")
    with page.expect_navigation():
        page.click("#job-form button[type=submit]")
    summary = page.locator("#form-errors li").all_inner_texts()
    assert summary == ["Rank: Rank must be a whole number from 1 to 1024",
                       "Learning rate: Learning rate must be a number above 0 and at most 1",
                       "Max length: Max length must be from 8 to 32768"], summary
    assert "lr" not in " ".join(summary).replace("Learning rate", "").split()
    assert page.locator(".field.has-error").count() == 3
    for width in ("desktop", "phone"):
        at_width(page, width)
        shoot(page, f"errors-{width}")
