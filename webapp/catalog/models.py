"""BaseModel: one entry of the global base-model catalog (demo models and models an admin adds).

An entry is created `inspecting`; the worker's inspect task (workers/catalog_tasks.py) fills `info` with what
`trainer.inspect_model.inspect` reports (architecture, linear-layer shapes, parameter count, size, chat template)
and marks it `ready`, or `failed` with the reason in `error`. Not team-owned: every team sees the same catalog.
"""
import re

from django.core.exceptions import ValidationError
from django.db import models

# "org/name" as the Hugging Face hub spells repository ids (also the built-in "demo/..." names).
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class BaseModel(models.Model):
    class Status(models.TextChoices):
        INSPECTING = "inspecting", "Inspecting"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    name = models.CharField(max_length=200, help_text="Name shown to users.")
    source = models.CharField(
        max_length=500, unique=True,
        help_text='A Hugging Face id ("org/name"), a local folder path on the workers, or a built-in "demo/..." name.')
    is_demo = models.BooleanField(default=False, help_text="Built-in demo model, labelled as such everywhere.")
    description = models.TextField(blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.INSPECTING)
    error = models.TextField(blank=True, help_text="Why inspection failed, when it did.")
    architecture = models.CharField(max_length=200, blank=True)
    model_type = models.CharField(max_length=100, blank=True)
    task_types = models.JSONField(default=list, blank=True, help_text='Tasks it can be trained for: "causal-lm", '
                                                                      '"classification".')
    info = models.JSONField(default=dict, blank=True, help_text="The inspect output, incl. linear layer shapes.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-is_demo", "name"]

    def __str__(self):
        return self.name

    def clean(self):
        self.source = (self.source or "").strip()
        if not (HUB_ID.match(self.source) or self.source.startswith("/")):
            raise ValidationError({"source": 'Give a Hugging Face id like "org/name" or an absolute folder path '
                                             'on the workers, like "/models/my-model".'})

    @property
    def is_ready(self) -> bool:
        return self.status == self.Status.READY

    @property
    def default_task(self) -> str:
        return self.info.get("task") or (self.task_types[0] if self.task_types else "causal-lm")
