"""The job form: every setting with its default and a one-line explanation, checked by the engine's own rules.

Field names are TrainConfig's, so `trainer.config.TrainConfig.check()` errors (ConfigError.field) land on the
field they are about, with the engine's wording. `settings_dict()` is what the job row stores and the worker turns
into a TrainConfig; `initial_from(job)` turns it back into form values (Clone). The worker class offers only the
classes a live worker serves (webapp.jobs.routing), asked once per form and only when the choices are needed.
A job for a class is refused when its peak-memory estimate (trainer.estimate) exceeds the memory the class's
workers advertise, with the changes that would make it fit.
"""
from __future__ import annotations

from django import forms
from django.db.models import Q

from trainer.advice import ADVISED_FIELDS
from trainer.config import (DTYPE_CHOICES, KEEP, MAX_RANK, METHODS, QUANTIZE_CHOICES, TARGET_PRESETS, LoraSettings,
                            TrainConfig)
from trainer.errors import ConfigError, TrainerError
from webapp.catalog.models import BaseModel
from webapp.jobs import routing, states
from webapp.jobs.priority import NORMAL, PRIORITIES
from webapp.ops import checks

CUSTOM = "custom"
ANY_WORKER = ("", "Any training worker")
DEFAULTS = TrainConfig(model="", data="", out="")
LORA_FIELDS = ("rank", "alpha", "dropout", "rslora")
TRAINING_FIELDS = ("epochs", "max_steps", "lr", "batch_size", "grad_accum", "max_length", "warmup",
                   "eval_fraction", "seed", "merge", "quantize", "dtype", "gradient_checkpointing", "method", "beta",
                   "rpo_alpha", "eval_every", "keep", "early_stopping_patience")
# Optional in a POST (absent: the engine's default), so older clients and forms keep working.
OPTIONAL_FIELDS = ("method", "beta", "rpo_alpha", "eval_every", "keep", "early_stopping_patience")
PREFERENCE_FORMAT = "preference"
QUANTIZE_LABELS = {"none": "none: the base as it is stored", "nf4": "nf4: 4-bit base (QLoRA), about 1/4 of bf16",
                   "int8": "int8: 8-bit base, about 1/2 of bf16"}
DTYPE_LABELS = {"auto": "auto: bf16 on GPUs that have it (else fp16), fp32 on CPU", "fp32": "fp32", "bf16": "bf16",
                "fp16": "fp16"}


class JobForm(forms.Form):
    name = forms.CharField(max_length=200, required=False,
                           help_text="A name to find this job by; left empty, it is made from the model and dataset.")
    base_model = forms.ModelChoiceField(queryset=BaseModel.objects.all(), empty_label=None,
                                        help_text="The pretrained model the adapter is trained on top of.")
    dataset = forms.ModelChoiceField(queryset=None, empty_label=None,
                                     help_text="The examples to learn from (upload one on the Datasets page).")
    eval_dataset = forms.ModelChoiceField(queryset=None, required=False, empty_label="— split from the dataset —",
                                          help_text="Optional held-out examples; otherwise a fraction of the "
                                                    "dataset is held out (eval fraction).")
    start_from = forms.ModelChoiceField(
        queryset=None, required=False, empty_label="— a new adapter —", label="Start from job",
        help_text="Continue training the adapter of a succeeded job on the same base model (for example DPO after "
                  "SFT), or the last checkpoint a cancelled job kept; otherwise a new adapter starts from zero.")
    task = forms.ChoiceField(choices=[("", "— as the dataset says —")] + [(t, t) for t in states.TASKS],
                             required=False,
                             help_text="causal-lm learns to write the completions; classification learns the labels.")
    worker_class = forms.ChoiceField(
        required=False, label="Worker class",
        help_text="The kind of training worker that runs it (such as a bigger GPU); only classes that have a "
                  "live worker are offered.",
        error_messages={"invalid_choice": "No live worker serves the class “%(value)s” right now: pick a class "
                                          "listed here, or any training worker."})
    priority = forms.ChoiceField(
        choices=[(p, p) for p in PRIORITIES], initial=NORMAL, required=False,
        help_text="Which of your team's waiting jobs starts first: high before normal before low (first come, "
                  "first served within a priority).")
    rank = forms.IntegerField(initial=DEFAULTS.lora.rank,
                              help_text=f"r: width of the low-rank update. Higher learns more, costs more. A whole "
                                        f"number from 1 to {MAX_RANK:,}; 4 to 64 suits most jobs.")
    alpha = forms.FloatField(initial=DEFAULTS.lora.alpha,
                             help_text="Scales the update by alpha/r; twice the rank is a common choice.")
    dropout = forms.FloatField(initial=DEFAULTS.lora.dropout,
                               help_text="Dropout on the LoRA branch's input, against overfitting small datasets.")
    targets = forms.ChoiceField(choices=[(p, p) for p in TARGET_PRESETS] + [(CUSTOM, "custom list…")],
                                initial=DEFAULTS.lora.targets,
                                help_text="Which linear layers get an adapter: attention only, attention and MLP, "
                                          "or every linear layer.")
    custom_targets = forms.CharField(required=False, max_length=500,
                                     help_text='Module-name suffixes separated by commas ("q_proj,v_proj"), or '
                                               '"re:" and a regular expression on full names.')
    rslora = forms.BooleanField(required=False, initial=DEFAULTS.lora.rslora, label="rsLoRA",
                                help_text="Rank-stabilised LoRA: scale by alpha/√r, steadier at high ranks.")
    epochs = forms.FloatField(initial=DEFAULTS.epochs,
                              help_text="Passes over the training examples (fractions allowed).")
    max_steps = forms.IntegerField(required=False,
                                   help_text="Stop after this many optimizer steps instead (overrides epochs).")
    lr = forms.FloatField(initial=DEFAULTS.lr, label="Learning rate",
                          help_text="Peak learning rate; LoRA usually wants 1e-4 to 5e-4.")
    batch_size = forms.IntegerField(initial=DEFAULTS.batch_size,
                                    help_text="Examples per forward pass; lower it if memory runs out.")
    grad_accum = forms.IntegerField(initial=DEFAULTS.grad_accum, label="Gradient accumulation",
                                    help_text="Batches summed per optimizer step: a bigger effective batch for "
                                              "the same memory.")
    max_length = forms.IntegerField(initial=DEFAULTS.max_length,
                                    help_text="Tokens kept per example; longer ones are cut. Memory grows with it.")
    warmup = forms.FloatField(initial=DEFAULTS.warmup,
                              help_text="Fraction of the steps during which the learning rate ramps up from 0.")
    eval_fraction = forms.FloatField(initial=DEFAULTS.eval_fraction,
                                     help_text="Fraction of the dataset held out to evaluate before and after.")
    seed = forms.IntegerField(initial=DEFAULTS.seed,
                              help_text="Makes the split, the shuffling and the initialisation repeatable.")
    method = forms.ChoiceField(choices=[(m, m) for m in METHODS], initial=DEFAULTS.method, required=False,
                               help_text="sft learns the dataset's answers; dpo learns to prefer each row's chosen "
                                         "answer over its rejected one (a preference dataset, causal-lm only).")
    beta = forms.FloatField(initial=DEFAULTS.beta, required=False, label="DPO beta",
                            help_text="DPO only: how close the tuned model stays to its base; higher keeps it "
                                      "closer (0.1 is the usual choice).")
    rpo_alpha = forms.FloatField(initial=DEFAULTS.rpo_alpha, required=False, label="SFT weight (RPO alpha)",
                                 help_text="DPO only: also learn to write the chosen answers, with this weight "
                                           "(0: plain DPO). Small models need it to show the preferred style.")
    eval_every = forms.IntegerField(initial=DEFAULTS.eval_every, required=False, label="Eval every (steps)",
                                    help_text="Also evaluate on the held-out examples every this many steps "
                                              "(0: only before and after training).")
    keep = forms.ChoiceField(choices=[(k, k) for k in KEEP], initial=DEFAULTS.keep, required=False,
                             label="Adapter kept",
                             help_text="best: the adapter of the best periodic eval (lowest eval loss, or best "
                                       "accuracy); last: the last step's; auto: best when evaluating periodically.")
    early_stopping_patience = forms.IntegerField(
        initial=DEFAULTS.early_stopping_patience, required=False, label="Early stopping patience",
        help_text="Stop after this many periodic evals without improvement (0: never; needs eval every).")
    sample_answers = forms.BooleanField(
        required=False, initial=True, label="Write sample answers",
        help_text="Causal LM: answer a few prompts at the start, at every eval and at the end, to read side by side.")
    sample_prompts = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}), label="Sample prompts",
        help_text="Causal LM: up to 10 prompts, one a line, answered at the start, at every eval and at the end "
                  "(left empty: the first 5 held-out prompts). The results page shows the answers side by side.")
    merge = forms.BooleanField(required=False, initial=DEFAULTS.merge, label="Merge at the end",
                               help_text="Also export a full model with the adapter merged in (bigger download).")
    quantize = forms.ChoiceField(choices=[(q, QUANTIZE_LABELS[q]) for q in QUANTIZE_CHOICES],
                                 initial=DEFAULTS.quantize, required=False, label="Quantize the base",
                                 help_text="Store the frozen base in 4 or 8 bits (bitsandbytes) to fit a bigger "
                                           "model on the GPU; the adapter still trains in full precision.")
    dtype = forms.ChoiceField(choices=[(d, DTYPE_LABELS[d]) for d in DTYPE_CHOICES], initial=DEFAULTS.dtype,
                              required=False, label="Precision",
                              help_text="The base's weights and compute dtype. The adapter and its optimizer "
                                        "state stay fp32.")
    gradient_checkpointing = forms.BooleanField(
        required=False, initial=DEFAULTS.gradient_checkpointing, label="Gradient checkpointing",
        help_text="Keep only each layer's input and recompute the rest in the backward pass: much less memory "
                  "for long rows, about a third more compute.")

    def __init__(self, *args, datasets=None, jobs=None, **kwargs):
        super().__init__(*args, **kwargs)
        from webapp.jobs.models import Job

        self.fields["start_from"].queryset = (jobs if jobs is not None else Job.objects.none()).filter(
            Q(state=states.SUCCEEDED) | Q(state=states.CANCELLED, artifacts__has_key="adapter"))
        self.fields["dataset"].queryset = datasets
        self.fields["eval_dataset"].queryset = datasets
        self._workers = None
        # A callable: evaluated only to render the choices or check a chosen class, never for "any worker".
        self.fields["worker_class"].choices = self._worker_class_choices
        for name in ADVISED_FIELDS:
            self.fields[name].advice = ""  # the page shows the advisor's reason under the field (see show_advice)

    def show_advice(self, advice: dict) -> None:
        """Put the advisor's reasons (webapp.jobs.advice) under their fields; the values are the form's initial."""
        for name, item in advice.items():
            self.fields[name].advice = item.reason

    def _live_workers(self) -> dict[str, dict]:
        if self._workers is None:
            self._workers = checks.workers()
        return self._workers

    # Left out of a POST (a script written before these settings existed): the engine's defaults.
    def clean_quantize(self):
        return self.cleaned_data["quantize"] or DEFAULTS.quantize

    def clean_dtype(self):
        return self.cleaned_data["dtype"] or DEFAULTS.dtype

    def clean_priority(self):
        return self.cleaned_data["priority"] or NORMAL

    def _worker_class_choices(self) -> list[tuple[str, str]]:
        workers = self._live_workers()
        return [ANY_WORKER] + [(name, _class_label(name, routing.class_capacity(workers, name)))
                               for name in routing.classes_of(workers)]

    def clean(self):
        data = super().clean()
        model, dataset, eval_dataset = data.get("base_model"), data.get("dataset"), data.get("eval_dataset")
        if dataset is not None and not data.get("task"):
            data["task"] = dataset.task or (model.default_task if model else "causal-lm")
        if data.get("targets") == CUSTOM:
            if not data.get("custom_targets", "").strip():
                self.add_error("custom_targets", "List the module names to target, or pick a preset.")
                return data
        if self.errors:
            return data
        task = data["task"]  # read once: add_error() drops a field from cleaned_data
        self._check_model(model, task)
        for field, chosen in (("dataset", dataset), ("eval_dataset", eval_dataset)):
            if chosen is not None:
                self._check_dataset(field, chosen, task)
        if data.get("method") == "dpo":
            for field, chosen in (("dataset", dataset), ("eval_dataset", eval_dataset)):
                if chosen is not None and chosen.status == "ready" and chosen.format != PREFERENCE_FORMAT:
                    self.add_error(field, f"{chosen.name} is a {chosen.format} dataset; DPO needs preference rows "
                                          "(prompt or messages, chosen, rejected).")
        parent = data.get("start_from")
        if parent is not None and model is not None and parent.base_model_id != model.pk:
            self.add_error("start_from", f"{parent.name} was trained on {parent.base_model.name}; an adapter can only "
                                         f"continue on the same base model.")
        elif parent is not None and parent.task != task:
            self.add_error("start_from", f"{parent.name} is a {parent.task} job; this one is {task}.")
        if eval_dataset is not None and eval_dataset == dataset:
            self.add_error("eval_dataset", "Pick a different dataset to evaluate on, or leave it empty to hold "
                                           "out a fraction of the training one.")
        self._check_settings(task)
        if not self.errors and model.is_ready:
            self._check_targets(model, task)
        if not self.errors and data.get("worker_class"):
            self._check_fit(model, dataset, task)
        if not data.get("name"):
            data["name"] = f"{model.name} · {dataset.name}"[:200]
        return data

    def _check_model(self, model, task):
        if model.status == BaseModel.Status.FAILED:
            self.add_error("base_model", f"{model.name} is unavailable: {model.error}")
        elif not model.is_ready:
            self.add_error("base_model", f"{model.name} is still being inspected; try again in a moment.")
        elif model.task_types and task not in model.task_types:
            self.add_error("task", f"{model.name} cannot be trained for {task}; it supports "
                                   f"{', '.join(model.task_types)}.")

    def _check_dataset(self, field, dataset, task):
        if dataset.status == "invalid":
            self.add_error(field, f"{dataset.name} did not pass validation: {dataset.error or 'see its page'}.")
        elif dataset.status == "ready" and dataset.task and dataset.task != task:
            self.add_error(field, f"{dataset.name} is a {dataset.task} dataset, but this job's task is {task}.")
        elif dataset.needs_row_confirmation:
            self.add_error(field, dataset.row_confirmation_message())

    def _check_settings(self, task):
        """Every setting the engine refuses, each on its field: the engine stops at the first, so a refused value
        is set back to its default and the check runs again, until it passes."""
        values = self.settings_dict()
        for _ in range(len(LORA_FIELDS) + len(TRAINING_FIELDS) + 2):
            try:
                TrainConfig.from_dict({**values, "model": "-", "data": "-", "out": "-", "task": task}).check()
                return
            except ConfigError as error:
                field = error.field if error.field in self.fields else None
                if field is None or not self._reset_to_default(values, field):
                    self.add_error(None, str(error))
                    return
                message = str(error).split(": ", 1)[-1]
                if message.startswith(f"{field} "):  # the engine's name for it ("lr") becomes the form's label
                    message = f"{self[field].label}{message[len(field):]}"
                self.add_error("custom_targets" if field == "targets" and self.cleaned_data.get("targets") == CUSTOM
                               else field, message)

    @staticmethod
    def _reset_to_default(values: dict, field: str) -> bool:
        if field in LORA_FIELDS or field == "targets":
            values["lora"][field] = getattr(DEFAULTS.lora, field)
        elif field in TRAINING_FIELDS:
            values[field] = getattr(DEFAULTS, field)
        else:
            return False
        return True

    def _check_targets(self, model, task):
        """The targets must match layers of this model: the estimate resolves them as the engine will."""
        from trainer.estimate import estimate

        data = self.cleaned_data
        try:
            estimate(model.info, targets=self.targets_spec(), rank=data["rank"], task=task,
                     batch_size=data["batch_size"], max_length=data["max_length"])
        except TrainerError as error:
            self.add_error("custom_targets" if data["targets"] == CUSTOM else "targets", str(error))

    def _check_fit(self, model, dataset, task):
        """The job's peak-memory estimate must fit the memory its worker class advertises."""
        from trainer.estimate import fit_problem

        data = self.cleaned_data
        capacity = routing.class_capacity(self._live_workers(), data["worker_class"])
        if capacity is None:  # workers that predate the capacity answer: nothing to check against
            return
        settings = {name: data.get(name) for name in ("rank", "batch_size", "grad_accum", "max_length",
                                                      "gradient_checkpointing")}
        settings.update(task=task, quantize=data.get("quantize") or "none", dtype=data.get("dtype") or "auto")
        labels = (dataset.report or {}).get("labels") if task == "classification" else None
        problem = fit_problem(model.info, settings, capacity["memory_bytes"], capacity["device"],
                              targets=self.targets_spec(), num_labels=len(labels) if labels else None)
        if problem:
            self.add_error("worker_class", f"{data['worker_class']}: {problem}.")

    def targets_spec(self) -> str:
        data = self.cleaned_data
        return data["custom_targets"].strip() if data.get("targets") == CUSTOM else data.get("targets", "")

    def settings_dict(self) -> dict:
        """The TrainConfig-shaped settings the job stores (no paths, no model, no task)."""
        data = self.cleaned_data
        lora = {name: data.get(name) for name in LORA_FIELDS}
        lora["targets"] = self.targets_spec()
        values = {name: data.get(name) for name in TRAINING_FIELDS}
        values["sample_answers"] = bool(data.get("sample_answers"))
        values["sample_prompts"] = [line.strip() for line in (data.get("sample_prompts") or "").splitlines()
                                    if line.strip()]
        for name in OPTIONAL_FIELDS:
            if values[name] is None or values[name] == "":
                values[name] = getattr(DEFAULTS, name)
        if data.get("eval_dataset") is not None:
            values["eval_fraction"] = 0.0
        return {**values, "lora": lora}


def continuing(job) -> dict:
    """Form values that continue `job`'s adapter (its last checkpoint, for a cancelled job) with its settings."""
    return {**initial_from(job), "name": f"{job.name} (continued)"[:200], "start_from": job.pk}


def initial_from(job) -> dict:
    """Form values that reproduce `job`'s settings (for Clone)."""
    settings = dict(job.settings)
    lora = settings.pop("lora", {})
    initial = {name: settings[name] for name in TRAINING_FIELDS if name in settings}
    initial["sample_prompts"] = "\n".join(settings.get("sample_prompts") or [])
    initial["sample_answers"] = bool(settings.get("sample_answers"))
    initial.update({name: lora[name] for name in LORA_FIELDS if name in lora})
    targets = lora.get("targets", LoraSettings().targets)
    initial.update({"targets": targets} if targets in TARGET_PRESETS else {"targets": CUSTOM, "custom_targets": targets})
    initial.update(name=f"{job.name} (copy)"[:200], base_model=job.base_model_id, dataset=job.dataset_id,
                   eval_dataset=job.eval_dataset_id, task=job.task, worker_class=job.worker_class, priority=job.priority,
                   start_from=job.start_from_id)
    return initial


def _class_label(name: str, capacity: dict | None) -> str:
    """A class's name, and how many GPUs (processes) each of its jobs trains on when that is more than one."""
    gpus = (capacity or {}).get("gpus", 1)
    return f"{name} ({gpus} GPUs a job)" if gpus > 1 else name
