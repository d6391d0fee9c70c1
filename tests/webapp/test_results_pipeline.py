"""The whole second half of a job's life on real pieces: a job trained by a real worker gets a results page from
its real metrics, an adapter zip that PEFT loads, and playground answers from the same worker."""
import io
import re
import zipfile

import pytest
import torch
from django.urls import reverse


from jobs_helpers import classification_rows, make_job, stored_dataset, tiny_entry, wait_for

from webapp.jobs import queue
from webapp.jobs.models import Job

SETTINGS = {"max_steps": 6, "batch_size": 4, "max_length": 64, "eval_fraction": 0.25, "lr": 1e-3,
            "lora": {"rank": 4, "alpha": 8.0, "dropout": 0.0, "targets": "attention", "rslora": False}}


@pytest.mark.django_db(transaction=True)
def test_a_job_trained_by_a_real_worker_has_results_downloads_and_a_playground(
        celery_worker, member_client, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from trainer.inference import load_for_inference
    from webapp.teams.models import Team

    team = Team.objects.get(name="Team A")
    base = tiny_entry("bert", tmp_path / "bert")
    job = make_job(team, base, stored_dataset(team, classification_rows(), task="classification"),
                   settings=SETTINGS, name="Ticket router")
    queue.submit(job)
    job = wait_for(lambda: Job.objects.filter(pk=job.pk, state__in=["succeeded", "failed"]).first(), 240,
                   what="the job to finish")
    assert job.state == "succeeded", job.error

    page = member_client.get(reverse("results:job", args=[job.pk])).content.decode()
    times = job.metrics["base_model_bytes"] / job.metrics["adapter_bytes"]
    assert f"×{times:.0f} smaller" in page and f"{job.metrics['trainable_params']:,}" in page
    accuracy = f"{100 * job.metrics['final_eval']['accuracy']:.1f} %"
    assert re.search(r"Accuracy</td>\s*<td class=\"num\">[\d.]+ %</td><td class=\"num\">" + re.escape(accuracy), page)
    assert page.count('<table class="table matrix">') == 2
    assert len(re.search(r'<polyline class="line series-0" points="([^"]+)"', page).group(1).split()) == 6

    response = member_client.get(reverse("results:download", args=[job.pk, "adapter"]))
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    archive.extractall(tmp_path / "unzipped")
    folder = next((tmp_path / "unzipped").iterdir())
    ours, tokenizer = load_for_inference(base.source, adapter_dir=folder)
    id2label = ours.config.id2label
    theirs = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(
        base.source, num_labels=len(id2label), id2label=id2label), folder).eval()
    batch = tokenizer(["my refund is late", "the app will crash"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch).logits, theirs(**batch).logits, rtol=1e-5, atol=1e-5)

    started = member_client.post(reverse("results:playground_run"), {
        "job": job.pk, "prompt": "my invoice is wrong", "temperature": "0.7", "top_p": "0.95",
        "max_new_tokens": "8"})
    stream = b"".join(member_client.get(started.json()["stream_url"]).streaming_content).decode()
    assert stream.count('"probs"') == 2 and '"end": true' in stream


@pytest.mark.django_db(transaction=True)
def test_a_classification_jobs_results_list_the_held_out_rows_whose_prediction_changed(
        celery_worker, member_client, tmp_path):
    from django.utils.html import escape

    from webapp.teams.models import Team

    team = Team.objects.get(name="Team A")
    job = make_job(team, tiny_entry("bert", tmp_path / "bert"),
                   stored_dataset(team, classification_rows(), task="classification"),
                   settings={**SETTINGS, "lr": 3e-2, "max_steps": 12}, name="Ticket router")
    queue.submit(job)
    job = wait_for(lambda: Job.objects.filter(pk=job.pk, state__in=["succeeded", "failed"]).first(), 240,
                   what="the job to finish")
    assert job.state == "succeeded", job.error

    changes = job.metrics["prediction_changes"]  # stored on the job row from the run's metrics.json
    assert changes["compared"] == job.metrics["final_eval"]["eval_examples"] == 12
    assert 0 < changes["changed"] == len(changes["rows"])
    # The rows reconcile with the confusion matrices: each fixed row adds one to the diagonal, each broken one
    # takes one away.
    diagonal = [sum(m[i][i] for i in range(len(m))) for m in
                (job.metrics[stage]["confusion_matrix"]["matrix"] for stage in ("base_eval", "final_eval"))]
    assert diagonal[1] - diagonal[0] == changes["fixed"] - changes["broken"]
    for row in changes["rows"]:
        assert row["text"].startswith("my ") and row["before"] != row["after"]

    page = member_client.get(reverse("results:job", args=[job.pk])).content.decode()
    table = page.split('<div id="prediction-changes">')[1].split("</div>")[0]
    assert (f"{changes['changed']} of 12 held-out rows are predicted differently after\n      tuning: "
            f"{changes['fixed']} fixed (wrong → right), {changes['broken']} broken (right → wrong).") in table
    shown = re.findall(r"<tr class=\"(\w*)\"><td>([^<]*)</td>\s*<td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td></tr>",
                       table)
    assert shown == [("fixed" if r["after"] == r["label"] else "broken" if r["before"] == r["label"] else "",
                      escape(r["text"]), r["label"], r["before"], r["after"]) for r in changes["rows"]]
