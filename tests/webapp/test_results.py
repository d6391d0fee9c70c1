"""The results page of a finished job and the comparison of jobs: numbers, pictures, and team isolation."""
import re

import pytest
from django.urls import reverse

import finished_jobs


def text_of(response) -> str:
    """The page with runs of whitespace as one space and none between tags."""
    return re.sub(r">\s+<", "><", re.sub(r"\s+", " ", response.content.decode()))


def test_the_results_page_shows_parameter_savings_in_numbers_and_a_picture(member_client, team_a, llama_run):
    job = finished_jobs.make_job(team_a, llama_run)
    metrics = job.metrics
    page = text_of(member_client.get(reverse("results:job", args=[job.pk])))
    times = metrics["base_model_bytes"] / metrics["adapter_bytes"]
    assert f"×{times:.0f} smaller" in page and "than a full fine-tune checkpoint" in page
    assert f"{metrics['trainable_params']:,}" in page and f"{metrics['total_params']:,}" in page
    assert f"{100 * metrics['trainable_params'] / metrics['total_params']:.3f} %" in page
    savings = page.split('id="savings"')[1].split("</section>")[0]
    assert savings.count("<svg") == 2 and 'class="bar series-1"' in savings
    assert "Full fine-tune checkpoint" in savings and "LoRA adapter" in savings


def test_the_adapter_bar_is_drawn_to_scale_against_the_full_model(member_client, team_a, llama_run):
    job = finished_jobs.make_job(team_a, llama_run)
    page = member_client.get(reverse("results:job", args=[job.pk])).content.decode()
    full, adapter = [float(w) for w in re.findall(r'class="bar series-\d" x="\d+" y="\d+" width="([\d.]+)"', page)[:2]]
    expected = job.metrics["adapter_bytes"] / job.metrics["base_model_bytes"]
    assert adapter / full == pytest.approx(max(expected, 2 / full), rel=0.02)


def test_causal_lm_results_compare_loss_and_perplexity_before_and_after(member_client, team_a, llama_run):
    job = finished_jobs.make_job(team_a, llama_run)
    page = text_of(member_client.get(reverse("results:job", args=[job.pk])))
    evaluation = page.split('id="eval"')[1].split("</section>")[0]
    assert re.search(r"Eval loss</td><td class=\"num\">5.5</td><td class=\"num\">3.1</td><td class=\"num\">-2.4</td>",
                     evaluation)
    assert re.search(r"Perplexity</td><td class=\"num\">244.7</td><td class=\"num\">22.2</td>", evaluation)
    assert 'class="improved"' in evaluation and "matrix" not in evaluation


def test_classification_results_show_accuracy_macro_f1_and_both_confusion_matrices(member_client, team_a, bert_run):
    job = finished_jobs.make_job(team_a, bert_run)
    page = text_of(member_client.get(reverse("results:job", args=[job.pk])))
    evaluation = page.split('id="eval"')[1].split('id="loss"')[0]
    assert re.search(r"Accuracy</td><td class=\"num\">25.0 %</td><td class=\"num\">75.0 %</td>"
                     r"<td class=\"num\">\+50.0 pts</td>", evaluation)
    assert re.search(r"Macro-F1</td><td class=\"num\">20.0 %</td><td class=\"num\">74.0 %</td>", evaluation)
    matrices = re.findall(r'<table class="table matrix">.*?</table>', evaluation)
    assert len(matrices) == 2
    after = re.findall(r">(\d+)</td>", matrices[1])
    assert after == [str(c) for row in job.metrics["final_eval"]["confusion_matrix"]["matrix"] for c in row]
    assert all(label in matrices[0] for label in finished_jobs.tiny_models.LABELS)


def test_the_loss_curve_plots_every_train_step_and_the_eval_points(member_client, team_a, llama_run):
    job = finished_jobs.make_job(team_a, llama_run)
    page = member_client.get(reverse("results:job", args=[job.pk])).content.decode()
    chart = page.split('id="loss"')[1].split("</section>")[0]
    train_line = re.search(r'<polyline class="line series-0" points="([^"]+)"', chart).group(1)
    assert len(train_line.split()) == len(job.metrics["history"])
    # base eval at step 0, the periodic eval at step 4, the final eval at the last step
    assert chart.count('<circle class="dot series-0"') == 3
    assert "train loss" in chart and "eval loss" in chart


def test_a_job_that_has_not_succeeded_has_no_results_and_no_downloads(member_client, team_a, llama_run):
    job = finished_jobs.make_job(team_a, llama_run, state="running")
    page = text_of(member_client.get(reverse("results:job", args=[job.pk])))
    assert "Results appear when the job has succeeded; this one is <strong>running</strong>" in page
    assert "download" not in page.lower().split("<main")[1]


def test_compare_shows_settings_side_by_side_with_differences_highlighted(member_client, team_a, llama_run):
    first = finished_jobs.make_job(team_a, llama_run, name="rank four")
    second = finished_jobs.make_job(team_a, llama_run, name="rank sixteen")
    second.settings = {**second.settings, "lora": {**second.settings["lora"], "rank": 16}}
    second.save(update_fields=["settings"])
    page = text_of(member_client.get(reverse("results:compare"), {"job": [first.pk, second.pk]}))
    settings_table = page.split('id="compare-settings"')[1].split("</section>")[0]
    assert re.search(r'<tr class="diff"><th>LoRA rank</th><td>4</td><td>16</td></tr>', settings_table)
    assert re.search(r"<tr><th>LoRA alpha</th><td>8</td><td>8</td></tr>", settings_table)
    assert re.search(r'<tr class="diff"><th>Dataset</th>', settings_table)
    metrics_table = page.split('id="compare-metrics"')[1].split("</section>")[0]
    assert re.search(r"Perplexity \(after\)</th><td class=\"num\">22.2</td><td class=\"num\">22.2</td>", metrics_table)
    # One format per row: durations with a unit and one decimal, rates and counts rounded, shares in %.
    assert re.search(r"Training time</th><td class=\"num\">3.5 s</td><td class=\"num\">3.5 s</td>", metrics_table)
    assert re.search(r"Tokens/s</th><td class=\"num\">462</td>", metrics_table)
    share = f"{first.metrics['trainable_percent']:.3g} %"
    assert re.search(rf"Trainable share</th><td class=\"num\">{re.escape(share)}</td>", metrics_table)
    chart = page.split('id="compare-loss"')[1].split("</section>")[0]
    assert chart.count("<svg") == 1
    assert '<polyline class="line series-0"' in chart and '<polyline class="line series-1"' in chart
    assert f"#{first.pk} train loss" in chart and f"#{second.pk} train loss" in chart


def test_compare_from_a_results_page_ticks_that_job_in_the_picker(member_client, team_a, llama_run):
    job = finished_jobs.make_job(team_a, llama_run)
    page = text_of(member_client.get(reverse("results:compare"), {"job": job.pk}))
    assert re.search(rf'<input type="checkbox" name="job" value="{job.pk}"[^>]* checked>', page)
    assert "you picked" not in page and 'id="compare-settings"' not in page


@pytest.mark.parametrize("count", [1, 5])
def test_compare_asks_for_two_to_four_jobs(member_client, team_a, llama_run, count):
    jobs = [finished_jobs.make_job(team_a, llama_run, name=f"job {i}") for i in range(count)]
    page = text_of(member_client.get(reverse("results:compare"), {"job": [job.pk for job in jobs], "go": "1"}))
    assert f"Pick 2 to 4 jobs to compare (you picked {count})." in page
    assert 'id="compare-settings"' not in page


def test_another_teams_job_cannot_be_seen_or_compared(member_client, team_a, team_b, llama_run):
    mine = finished_jobs.make_job(team_a, llama_run, name="mine")
    theirs = finished_jobs.make_job(team_b, llama_run, name="their secret job")
    assert member_client.get(reverse("results:job", args=[theirs.pk])).status_code == 404
    page = text_of(member_client.get(reverse("results:compare"), {"job": [mine.pk, theirs.pk]}))
    assert f"Job {theirs.pk} is not one of your team&#x27;s finished jobs." in page
    assert "their secret job" not in page
    assert "their secret job" not in text_of(member_client.get(reverse("results:compare")))


@pytest.mark.parametrize("url", ["results:job", "results:compare"])
def test_anonymous_visitors_are_sent_to_sign_in(client, db, url):
    target = reverse(url, args=[1]) if url == "results:job" else reverse(url)
    response = client.get(target)
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_a_merged_4bit_job_says_its_base_was_dequantized_to_the_bases_own_dtype(member_client, team_a,
                                                                                merged_llama_run):
    job = finished_jobs.make_job(team_a, merged_llama_run, merged=True)
    plain = text_of(member_client.get(reverse("results:job", args=[job.pk])))
    assert "Merged model (.zip)" in plain and "dequantized" not in plain
    job.metrics = {**job.metrics, "quantize": "nf4", "dtype": "fp32", "merged_dtype": "bfloat16"}
    job.save(update_fields=["metrics"])
    downloads = text_of(member_client.get(reverse("results:job", args=[job.pk]))).split('id="downloads"')[1]
    assert ("trained on a nf4 base, so the base was dequantized back to bfloat16 (the base's own dtype) and the "
            "adapter merged into it") in downloads.split("</section>")[0]
