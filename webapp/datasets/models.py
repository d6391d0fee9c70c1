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

# Above this share of rows with problems a file is almost always a mapping or export mistake: it trains only once
# someone confirms training on the good rows.
BAD_ROWS_LIMIT = 0.2


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
    good_rows_confirmed = models.BooleanField(
        default=False, help_text="Someone confirmed training on the good rows of a file where many rows have "
                                 "problems; cleared by each validation.")
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
        self.good_rows_confirmed = False
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
    def good_rows(self) -> int:
        """Rows a job trains on: the report's usable rows (all of them for a dataset without a report)."""
        return (self.report or {}).get("valid_rows", self.rows or 0)

    @property
    def bad_rows(self) -> int:
        return (self.rows or 0) - self.good_rows

    @property
    def needs_row_confirmation(self) -> bool:
        """Ready, but more than BAD_ROWS_LIMIT of its rows have problems and nobody has confirmed training on the
        good ones yet."""
        return (self.status == self.Status.READY and not self.good_rows_confirmed and bool(self.rows)
                and self.bad_rows > BAD_ROWS_LIMIT * self.rows)

    def confirm_good_rows(self) -> None:
        self.good_rows_confirmed = True
        Dataset.objects.filter(pk=self.pk, revision=self.revision).update(good_rows_confirmed=True)

    def row_confirmation_message(self) -> str:
        """Why it cannot train yet, and what to do: for the job form, the API and the dataset page."""
        return (f"{self.name}: {self.bad_rows} of {self.rows} rows ({round(100 * self.bad_rows / self.rows)} %) "
                f"have problems, which is usually a column mapping or export mistake. Check its problems, or "
                f"confirm “Train on the {self.good_rows} good rows” on its page.")

    @property
    def total_bytes(self) -> int:
        return self.size_bytes + self.eval_size_bytes

    @property
    def is_validating(self) -> bool:
        return self.status == self.Status.VALIDATING
