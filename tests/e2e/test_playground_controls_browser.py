"""The playground in Chromium: temperature, top-p and max tokens show for a language model's job and are hidden
for a classifier's (the `hidden` attribute beats the grid's display), at 1400 and 390 px."""
import pytest

import finished_jobs
from webapp.teams.models import Team

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_sampling_controls_show_only_for_a_language_model(signed_in, at_width, shoot, bert_run, llama_run):
    page = signed_in("fay", "Try team")
    team = Team.objects.get(name="Try team")
    classifier = finished_jobs.make_job(team, bert_run, name="Router")
    generator = finished_jobs.make_job(team, llama_run, name="Writer")
    page.goto("/playground/")
    for width in ("desktop", "phone"):
        at_width(page, width)
        page.select_option("#id_job", str(classifier.pk))
        assert not page.is_visible("[data-generation-only]")
        for name in ("temperature", "top_p", "max_new_tokens"):
            assert not page.is_visible(f"#id_{name}")
        assert page.inner_text("[data-text-label]") == "Text to classify"
        assert page.is_visible("[data-classification-note]")
        shoot(page, f"classifier-{width}")
        page.select_option("#id_job", str(generator.pk))
        for name in ("temperature", "top_p", "max_new_tokens"):
            assert page.is_visible(f"#id_{name}")
        assert not page.is_visible("[data-classification-note]")
        shoot(page, f"generator-{width}")
