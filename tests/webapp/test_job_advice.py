"""The settings advisor in the web app: the new job form starts from its values with their reasons, its endpoint
answers for the team's datasets only, Clone keeps the cloned job's settings, and the results page suggests what to
change after a run that improved little (and nothing after one that improved clearly)."""
import pytest
from django.urls import reverse

from jobs_helpers import classification_rows, completion_rows, make_job, stored_dataset, tiny_entry
from test_jobs_pages import bert, team, tiny_dirs  # noqa: F401  (fixtures)
from trainer.advice import ADVISED_FIELDS, advise
from webapp.teams.models import Team

REPORT = {"valid_rows": 300, "labels": {"billing": 100, "bug": 100, "other": 100},
          "token_stats": {"min": 5, "median": 20, "p95": 40, "max": 44, "mean": 21.0, "estimated": False}}


@pytest.fixture
def tickets(team):
    return stored_dataset(team, classification_rows(300), task="classification", report=REPORT)


def field_value(page: str, name: str) -> str:
    return page.split(f'name="{name}"', 1)[1].split('value="', 1)[1].split('"', 1)[0]


def test_the_form_starts_from_the_advised_settings_and_shows_why(member_client, bert, tickets):
    page = member_client.get(reverse("jobs:create")).content.decode()
    advice = advise(bert.info, task="classification", rows=300, token_stats=REPORT["token_stats"], num_labels=3)
    for name in ("epochs", "lr", "rank", "alpha", "batch_size", "max_length"):
        assert float(field_value(page, name)) == advice[name].value, name
    targets = page.split('name="targets"', 1)[1].split("</select>", 1)[0]
    assert f'<option value="{advice["targets"].value}" selected>' in targets
    assert page.count('class="advice"') == len(ADVISED_FIELDS)
    for item in advice.values():
        assert f"Advised: {item.reason}" in page.replace("&#x27;", "'")


def test_the_advice_endpoint_answers_for_the_teams_datasets_only(member_client, bert, tickets):
    answer = member_client.get(reverse("jobs:advice"), {"base_model": bert.pk, "dataset": tickets.pk}).json()
    advice = advise(bert.info, task="classification", rows=300, token_stats=REPORT["token_stats"], num_labels=3)
    assert answer == {name: {"value": item.value, "reason": item.reason} for name, item in advice.items()}
    own_eval = member_client.get(reverse("jobs:advice"),
                                 {"base_model": bert.pk, "dataset": tickets.pk, "eval_dataset": "1"}).json()
    assert own_eval["epochs"]["value"] <= answer["epochs"]["value"]  # every row trains: no fewer steps an epoch
    theirs = stored_dataset(Team.objects.create(name="Team B"), classification_rows(), task="classification")
    refused = member_client.get(reverse("jobs:advice"), {"base_model": bert.pk, "dataset": theirs.pk})
    assert refused.status_code == 404 and refused.json()["error"] == f"dataset {theirs.pk} is not one of your team's"


def test_clone_keeps_the_cloned_jobs_settings_not_the_advice(member_client, team, bert, tickets):
    job = make_job(team, bert, tickets, settings={"epochs": 7.0, "lr": 0.0004, "batch_size": 2, "max_length": 48,
                                                  "lora": {"rank": 2, "alpha": 4.0, "targets": "attention"}})
    page = member_client.get(reverse("jobs:create"), {"clone": job.pk}).content.decode()
    assert [field_value(page, name) for name in ("epochs", "lr", "batch_size", "max_length", "rank")] == \
        ["7.0", "0.0004", "2", "48", "2"]
    assert 'class="advice"' in page and "Advised:" not in page  # the reasons appear only once the advisor answers


LITTLE = {"base_eval": {"eval_loss": 6.3, "perplexity": 545.0}, "final_eval": {"eval_loss": 6.2, "perplexity": 493.0}}
CLEAR = {"base_eval": {"eval_loss": 6.3, "perplexity": 545.0}, "final_eval": {"eval_loss": 2.6, "perplexity": 13.5}}
ROSE = {"base_eval": {"eval_loss": 6.3}, "final_eval": {"eval_loss": 3.0},
        "eval_history": [{"step": 50, "eval_loss": 2.5}, {"step": 100, "eval_loss": 2.8}]}
SETTINGS = {"epochs": 3.0, "max_steps": None, "lr": 0.0002, "lora": {"rank": 8, "alpha": 16.0, "targets": "attention"}}


@pytest.mark.parametrize("metrics, expected", [
    (LITTLE, ["The eval loss fell only 1.6 % (from 6.3 to 6.2).", "epochs 3 → 6", "learning rate 0.0002 → 0.0006",
              "rank 8 → 16", "targets attention → attention+mlp"]),
    (ROSE, ["The eval loss ended at 3, above step 50&#x27;s 2.5", "epochs 3 → 2", "learning rate 0.0002 → 6.7e-05"]),
    (CLEAR, []),
])
def test_the_results_page_suggests_what_to_change_after_a_run_that_improved_little(member_client, team, tiny_dirs,
                                                                                   metrics, expected):
    llama = tiny_entry("llama", tiny_dirs / "llama")
    data = stored_dataset(team, completion_rows(), task="causal-lm")
    job = make_job(team, llama, data, state="succeeded", settings=SETTINGS, metrics={**metrics, "steps": 150})
    page = member_client.get(reverse("results:job", args=[job.pk])).content.decode()
    if not expected:
        assert 'id="next-steps"' not in page
        return
    section = page.split('id="next-steps"', 1)[1].split("</section>", 1)[0]
    for text in expected:
        assert text in section, (text, section)
    assert f"clone={job.pk}" in section


def test_a_preference_dataset_is_advised_dpos_fewer_steps_and_sft_its_own(member_client, team, tiny_dirs):
    llama = tiny_entry("llama", tiny_dirs / "llama")
    report = {"valid_rows": 240, "token_stats": REPORT["token_stats"]}
    rows = [{"prompt": f"Q{i}:", "chosen": " yes", "rejected": " NO"} for i in range(240)]
    prefs = stored_dataset(team, rows, task="causal-lm", format="preference", report=report)
    asked = {"base_model": llama.pk, "dataset": prefs.pk}
    dpo = member_client.get(reverse("jobs:advice"), asked).json()
    sft = member_client.get(reverse("jobs:advice"), {**asked, "method": "sft"}).json()
    for method, answer in (("dpo", dpo), ("sft", sft)):  # the form's preset for this dataset is dpo
        expected = advise(llama.info, task="causal-lm", rows=240, token_stats=REPORT["token_stats"], method=method)
        assert answer == {name: {"value": item.value, "reason": item.reason} for name, item in expected.items()}
    assert dpo["epochs"]["value"] < sft["epochs"]["value"]
    page = member_client.get(reverse("jobs:create"), {"dataset": prefs.pk}).content.decode()
    assert float(field_value(page, "epochs")) == dpo["epochs"]["value"]
