"""The results page of one finished job and the comparison of 2–4 jobs."""
from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from webapp.jobs import states
from webapp.jobs.models import Job
from webapp.results import charts, summary
from webapp.results.suggestions import suggestions
from webapp.results.forms import CompareForm
from webapp.serving.snippets import code_panel
from webapp.teams.scoping import get_team_object_or_404, team_queryset


def finished_jobs(request):
    """The current team's succeeded jobs, newest first: the ones with results, downloads and a playground."""
    return team_queryset(request, Job).filter(state=states.SUCCEEDED).select_related("base_model", "dataset")


def _size_picture(saved: dict) -> str:
    from django.template.defaultfilters import filesizeformat

    return charts.bars([("Full fine-tune checkpoint", saved["full_bytes"], filesizeformat(saved["full_bytes"])),
                        ("LoRA adapter", saved["adapter_bytes"], filesizeformat(saved["adapter_bytes"]))],
                       title=f"The adapter is {saved['times_smaller']:.0f} times smaller than the full model")


def _params_picture(saved: dict) -> str:
    return charts.bars([("All parameters", saved["total"], f"{saved['total']:,}"),
                        ("Trained by LoRA", saved["trainable"], f"{saved['trainable']:,} ({saved['percent']:.3g} %)")],
                       title=f"{saved['percent']:.3g} % of the parameters are trained")


@login_required
def job_results(request, job_id: int):
    job = get_team_object_or_404(request, Job.objects.select_related("base_model", "dataset"), pk=job_id)
    metrics = job.metrics or {}
    saved = summary.savings(metrics)
    context = {
        "job": job, "metrics": metrics, "finished": job.state == states.SUCCEEDED and bool(metrics),
        "saved": saved,
        "size_picture": _size_picture(saved) if saved else "",
        "params_picture": _params_picture(saved) if saved else "",
        "eval_rows": summary.eval_rows(summary.eval_kind(job), metrics.get("base_eval"), metrics.get("final_eval")),
        "confusion_before": summary.confusion(metrics.get("base_eval")),
        "confusion_after": summary.confusion(metrics.get("final_eval")),
        "loss_chart": charts.line_chart(summary.loss_series(job, mark_kept=True), title=f"Loss of {job.name}"),
        "stop_summary": summary.stop_summary(metrics),
        "next_steps": suggestions(job) if job.state == states.SUCCEEDED else [],
        "samples": summary.sample_answers(metrics, request.GET.get("answers")),
        "settings_rows": summary.flat_settings(job).items(),
        "has_merged": bool((job.artifacts or {}).get("merged")),
        "code": code_panel(request, job),
    }
    return render(request, "results/job.html", context)


def comparison(jobs: list) -> dict:
    """Rows of settings (with `differs`) and metrics for jobs side by side, and their loss curves in one chart."""
    settings = [summary.flat_settings(job) for job in jobs]
    labels = list(dict.fromkeys(label for rows in settings for label in rows))
    setting_rows = [{"label": label, "values": [rows.get(label, "—") for rows in settings],
                     "differs": len({rows.get(label, "—") for rows in settings}) > 1} for label in labels]
    metric_rows = []
    # Each row has one format for every job, so the numbers line up ("279" and "3.9 s", not "3.864").
    for key, label, kind in [("trainable_params", "Trainable parameters", "whole"),
                             ("trainable_percent", "Trainable share", "share"),
                             ("adapter_bytes", "Adapter size", "bytes"),
                             ("train_runtime_s", "Training time", "seconds"), ("tokens_per_s", "Tokens/s", "whole"),
                             ("steps", "Steps", "whole")]:
        metric_rows.append({"label": label, "kind": kind, "values": [(job.metrics or {}).get(key) for job in jobs]})
    for stage, stage_label in (("base_eval", "before"), ("final_eval", "after")):
        for key, label, _ in _eval_keys(jobs):
            metric_rows.append({"label": f"{label} ({stage_label})",
                                "kind": "percent" if key in summary.PERCENT_METRICS else "number",
                                "values": [((job.metrics or {}).get(stage) or {}).get(key) for job in jobs]})
    series = [s for i, job in enumerate(jobs) for s in summary.loss_series(job, color=i, prefix=f"#{job.pk} ")]
    return {"setting_rows": setting_rows, "metric_rows": metric_rows,
            "loss_chart": charts.line_chart(series, title="Loss curves of the compared jobs")}


def _eval_keys(jobs: list) -> list[tuple[str, str, bool]]:
    """The eval metrics of the jobs' tasks, each once, in a stable order."""
    seen = {}
    for job in jobs:
        for key, label, higher in summary.EVAL_METRICS.get(summary.eval_kind(job), []):
            seen.setdefault(key, (key, label, higher))
    return list(seen.values())


@login_required
def compare(request):
    """?job=…&job=… compares; from a job's results page a single ?job= only ticks it in the picker."""
    jobs = finished_jobs(request)
    picked_ids = request.GET.getlist("job")
    if len(picked_ids) > 1 or "go" in request.GET:
        form = CompareForm(jobs, request.GET)
    else:
        form = CompareForm(jobs, initial={"job": [i for i in picked_ids if i.isdigit()]})
    context = {"form": form, "jobs": jobs}
    if form.is_bound and form.is_valid():
        picked = sorted(form.cleaned_data["job"], key=lambda job: job.pk)
        context.update(picked=picked, **comparison(picked))
    return render(request, "results/compare.html", context)
