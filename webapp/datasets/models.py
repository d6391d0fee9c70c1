"""Dataset: a team's uploaded training file (and optional eval file), with its validation status and report.

Status moves only through the methods here: `start_validation` (any status -> validating, a new revision) and the
worker's `record_report` / `record_failure` / `record_progress`, which write only while the revision they were
given is still the current one, so a validation superseded by a newer one (new mapping, new max length) never
overwrites its result.
"""
from django.db import models, transaction
from django.utils import timezone

from webapp.jobs.queue import VALIDATE_TASK, enqueue
from webapp.teams.models import TeamOwned


class Dataset(TeamOwned):
    class Status(models.TextChoices):
        VALIDATING = "validating", "Validating"
        READY = "ready", "Ready"
        INVALID = "invalid", "Invalid"

    name = models.CharField(max_length=200)
    original_filename = models.CharField(max_length=255, help_text="The uploaded file's name, a label only.")
    file = models.FileField(max_length=255, help_text="Storage name: datasets/<uuid4 hex><ext>.")
    eval_original_filename = models.CharField(max_length=255, blank=True)
    eval_file = models.FileField(max_length=255, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    eval_size_bytes = models.BigIntegerField(default=0)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.VALIDATING)
    format = models.CharField(max_length=40, blank=True)
    task = models.CharField(max_length=40, blank=True)
    rows = models.IntegerField(null=True, blank=True)
    report = models.JSONField(default=dict, blank=True)
    column_mapping = models.JSONField(default=dict, blank=True, help_text="{canonical field: column in the file}")
    error = models.TextField(blank=True)
    # How the report measures lengths: the tokenizer of this base model (None: a byte estimate), cut at max_length.
    analysis_model = models.ForeignKey("catalog.BaseModel", on_delete=models.SET_NULL, null=True, blank=True,
                                       related_name="+")
    max_length = models.PositiveIntegerField(default=512)
    progress = models.FloatField(default=0.0)
    revision = models.PositiveIntegerField(default=0)
    validated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self):
        return self.name

    def start_validation(self, **changes) -> int:
        """Save `changes`, move to validating with a new revision, and queue the worker's validation once the
        transaction commits. Returns the new revision."""
        for name, value in changes.items():
            setattr(self, name, value)
        self.status, self.progress, self.revision = self.Status.VALIDATING, 0.0, self.revision + 1
        self.save()
        pk, revision = self.pk, self.revision
        transaction.on_commit(lambda: enqueue(VALIDATE_TASK, (pk, revision), on="default"))
        return revision

    @classmethod
    def record_progress(cls, pk: int, revision: int, fraction: float) -> None:
        cls.objects.filter(pk=pk, revision=revision, status=cls.Status.VALIDATING).update(
            progress=max(0.0, min(1.0, fraction)))

    @classmethod
    def record_report(cls, pk: int, revision: int, report: dict) -> bool:
        """Store the validator's report: ready when usable, else invalid with its summary as the error."""
        usable = bool(report.get("usable"))
        return bool(cls.objects.filter(pk=pk, revision=revision).update(
            status=cls.Status.READY if usable else cls.Status.INVALID, report=report,
            format=report.get("format") or "", task=report.get("task") or "", rows=report.get("rows"),
            error="" if usable else report.get("summary", ""), progress=1.0, validated_at=timezone.now()))

    @classmethod
    def record_failure(cls, pk: int, revision: int, message: str) -> bool:
        return bool(cls.objects.filter(pk=pk, revision=revision).update(
            status=cls.Status.INVALID, error=message, progress=1.0, validated_at=timezone.now()))

    @property
    def total_bytes(self) -> int:
        return self.size_bytes + self.eval_size_bytes

    @property
    def is_validating(self) -> bool:
        return self.status == self.Status.VALIDATING
