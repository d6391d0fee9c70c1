"""The playground page shows, under each answer, the exact prompt text its model was given: for a chat job, the
conversation in the model's own chat template (a real worker answers; tiny models from finished_jobs)."""
import pytest

import finished_jobs


@pytest.mark.django_db(transaction=True)
def test_each_answer_shows_the_prompt_in_the_models_chat_template(signed_in, celery_worker, llama_run):
    from webapp.teams.models import Team

    page = signed_in("pia", "Team Pia")
    job = finished_jobs.make_job(Team.objects.get(name="Team Pia"), llama_run, name="Chat helper")
    job.metrics["data"]["format"] = "chat"  # the playground lays the prompt out as a chat turn
    job.save(update_fields=["metrics"])

    page.goto("/playground/")
    page.select_option("#id_job", str(job.pk))
    page.fill("#id_prompt", "Name a color")
    page.fill("#id_max_new_tokens", "4")
    page.click("#playground button[type=submit]")
    page.wait_for_function("/^(Done|Error)/.test(document.querySelector('[data-status]').textContent)",
                           timeout=120_000)
    assert page.inner_text("[data-status]").startswith("Done"), page.inner_text("[data-status]")
    # The tiny base's tokenizer has its own template (tiny_models.CHAT_TEMPLATE); the adapter has no tokenizer.
    for side in ("base", "tuned"):
        shown = page.locator(f'[data-prompt-for="{side}"]')
        shown.locator("summary").click()
        assert shown.locator("pre").text_content() == "<|user|>\nName a color\n<|assistant|>\n"
