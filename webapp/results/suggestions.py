"""What to change after a run that improved little, read from its metrics.json and settings: the results page lists
these under "What to try next".

- the held-out score barely moved (eval loss fell under LITTLE_GAIN of its start, accuracy or preference accuracy
  rose under LITTLE_POINTS) -> train longer, a higher learning rate, a wider rank, attention+mlp;
- the eval loss rose at the end, above the base's or above a periodic eval's best by ROSE_BY -> fewer epochs
  (or keep the best checkpoint with early stopping), a lower learning rate.
Each suggestion names the setting's value now and the one to try. Pure functions of the job row.
"""
from __future__ import annotations

import math

LITTLE_GAIN = 0.05  # eval loss fell by less than 5 % of the base's
LITTLE_POINTS = 0.05  # accuracy rose by less than 5 points
ROSE_BY = 0.02  # the final eval loss is 2 % above the best seen


def suggestions(job) -> list[str]:
    """Changes to try, most useful first; [] for a run that improved clearly (or recorded no evals)."""
    metrics = job.metrics or {}
    before, after = metrics.get("base_eval") or {}, metrics.get("final_eval") or {}
    settings = job.settings or {}
    rose = _eval_rose(metrics, before, after)
    if rose:
        return [rose, *_less_training(settings)]
    little = _little_gain(job, before, after)
    return [little, *_more_training(job.task, settings)] if little else []


def _eval_rose(metrics: dict, before: dict, after: dict) -> str | None:
    final = after.get("eval_loss")
    if not _number(final):
        return None
    losses = [(0, before.get("eval_loss"))] + [(e.get("step"), e.get("eval_loss"))
                                               for e in metrics.get("eval_history") or []]
    losses = [(step, loss) for step, loss in losses if _number(loss)]
    if not losses:
        return None
    step, best = min(losses, key=lambda point: point[1])
    if final <= best * (1 + ROSE_BY):
        return None
    when = "the base model's" if step == 0 else f"step {step}'s"
    return (f"The eval loss ended at {final:.3g}, above {when} {best:.3g}: the adapter started to memorise the "
            "training rows (or the steps were too large).")


def _little_gain(job, before: dict, after: dict) -> str | None:
    dpo = (job.settings or {}).get("method") == "dpo"
    key = "preference_accuracy" if dpo else "accuracy" if job.task == "classification" else None
    if key:
        b, a = before.get(key), after.get(key)
        if _number(b) and _number(a) and a - b < LITTLE_POINTS and a < 1:
            return f"{key.replace('_', ' ').capitalize()} moved from {b:.0%} to {a:.0%} only."
        return None
    b, a = before.get("eval_loss"), after.get("eval_loss")
    if _number(b) and _number(a) and b > 0 and (b - a) / b < LITTLE_GAIN:
        return f"The eval loss fell only {100 * (b - a) / b:.1f} % (from {b:.3g} to {a:.3g})."
    return None


def _more_training(task: str, settings: dict) -> list[str]:
    lora = settings.get("lora") or {}
    tips = []
    if settings.get("max_steps"):
        tips.append(f"Train longer: max steps {settings['max_steps']} → {2 * settings['max_steps']} (or clear it "
                    f"and set epochs).")
    elif _number(settings.get("epochs")):
        tips.append(f"Train longer: epochs {settings['epochs']:g} → {2 * settings['epochs']:g}.")
    if _number(settings.get("lr")):
        tips.append(f"Take larger steps: learning rate {settings['lr']:g} → {3 * settings['lr']:g}.")
    if _number(lora.get("rank")) and lora["rank"] < 16:
        tips.append(f"Widen the update: rank {lora['rank']} → 16 (alpha 32).")
    if task == "causal-lm" and lora.get("targets") == "attention":
        tips.append("Adapt the MLP layers too: targets attention → attention+mlp.")
    return tips


def _less_training(settings: dict) -> list[str]:
    tips = []
    if _number(settings.get("epochs")) and settings["epochs"] > 1 and not settings.get("max_steps"):
        tips.append(f"Train less: epochs {settings['epochs']:g} → {max(1, round(settings['epochs'] / 2)):g}, or set "
                    "eval every with adapter kept = best and early stopping, to keep the best checkpoint.")
    if _number(settings.get("lr")):
        tips.append(f"Take smaller steps: learning rate {settings['lr']:g} → {settings['lr'] / 3:.2g}.")
    return tips


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
