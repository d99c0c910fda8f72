"""Datasets users upload, fine-tuning jobs, and the event log of each job."""

from __future__ import annotations

import math
import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from apps.core.models import WorkRecord, WorkStatus


def _dataset_path(instance: Dataset, filename: str) -> str:
    # Generated names only: the client's file name is kept for display, never used as a path.
    extension = ".csv" if filename.endswith(".csv") else ".jsonl"
    return f"datasets/{instance.owner_id}/{instance.id}{extension}"


class Dataset(models.Model):
    """A validated JSONL file of training rows. ``tokens`` and ``preview`` are filled in by a
    worker, which has the model's tokenizer and chat template."""

    class Format(models.TextChoices):
        CHAT = "chat", _("Chat messages")
        PROMPT_COMPLETION = "prompt_completion", _("Prompt and completion")
        CLASSIFICATION = "classification", _("Text and label")

    # A label with this many times fewer rows than the most frequent one gets a warning.
    IMBALANCE_RATIO = 5

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="datasets"
    )
    filename = models.CharField(max_length=255)
    file = models.FileField(upload_to=_dataset_path, max_length=500)
    format = models.CharField(max_length=20, choices=Format.choices)
    bytes = models.PositiveBigIntegerField()
    rows = models.PositiveIntegerField()
    label_counts = models.JSONField(default=dict, blank=True)  # classification: rows per label
    # Counted by a worker with ``tokenizer_model``'s tokenizer; null until it has.
    tokens = models.PositiveBigIntegerField(null=True, blank=True)
    tokenizer_model = models.CharField(max_length=200, blank=True)
    preview = models.JSONField(default=list, blank=True)  # a few rows through the chat template
    analysis_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # When its analysis task was last sent (apps.core.queues: lost messages are sent again).
    sent_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.filename} ({self.rows} rows)"

    @property
    def openai_id(self) -> str:
        return f"file-{self.id.hex}"

    @property
    def imbalance_warning(self) -> str:
        """A warning when the labels are very unbalanced (a classifier may learn the majority)."""
        if len(self.label_counts) < 2:
            return ""
        most, least = max(self.label_counts.values()), min(self.label_counts.values())
        if most < self.IMBALANCE_RATIO * least:
            return ""
        rare = [label for label, n in self.label_counts.items() if n == least]
        return (
            f"The labels are unbalanced: {', '.join(rare)} has {least} rows against {most} for "
            "the most frequent label. Accuracy alone will flatter a model that predicts the "
            "majority; compare macro F1 with the baselines."
        )

    @property
    def is_analyzed(self) -> bool:
        return self.tokens is not None or bool(self.analysis_error)


class FineTuningJob(WorkRecord):
    """A job on the training queue: its data, method and settings, its progress, and the model it
    deployed. Not resumable: a job whose worker is lost fails (``worker_lost``)."""

    class Status(models.TextChoices):
        QUEUED = WorkStatus.QUEUED.value, _("Queued")
        VALIDATING = "validating", _("Validating")
        RUNNING = WorkStatus.RUNNING.value, _("Running")
        SUCCEEDED = WorkStatus.SUCCEEDED.value, _("Succeeded")
        FAILED = WorkStatus.FAILED.value, _("Failed")
        CANCELLED = WorkStatus.CANCELLED.value, _("Cancelled")

    class Kind(models.TextChoices):
        CHAT = "chat", _("Chat model")
        CLASSIFICATION = "classification", _("Text classifier")

    class Method(models.TextChoices):
        LORA = "lora", _("LoRA adapter (chat)")
        FULL = "full", _("Full fine-tuning")
        HEAD = "head", _("Frozen encoder, trained head (classifier)")

    METHODS = {
        Kind.CHAT: (Method.LORA, Method.FULL),
        Kind.CLASSIFICATION: (Method.FULL, Method.HEAD),
    }

    WORKING = (Status.VALIDATING, Status.RUNNING)
    ACTIVE = (Status.QUEUED, *WORKING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="finetune_jobs"
    )
    base_version = models.ForeignKey(
        "catalog.ModelVersion", on_delete=models.PROTECT, related_name="finetune_jobs"
    )
    training_file = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="+")
    validation_file = models.ForeignKey(
        Dataset, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # Follows from the base model: a chat model is fine-tuned, an encoder becomes a classifier.
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.CHAT)
    method = models.CharField(max_length=10, choices=Method.choices, default=Method.LORA)
    hyperparameters = models.JSONField()  # apps.finetuning.schemas.Hyperparameters, validated
    suffix = models.CharField(max_length=40, blank=True)

    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    trained_tokens = models.PositiveBigIntegerField(default=0)
    train_rows = models.PositiveIntegerField(default=0)
    validation_rows = models.PositiveIntegerField(default=0)
    progress_at = models.DateTimeField(null=True, blank=True)  # when the last step was recorded
    # chat: {"base": {"loss", "perplexity"}, "tuned": {...}, "samples": [{"prompt", "expected",
    # "base", "tuned"}]}; classification: {"labels", "splits", "test": <metrics>, "baselines":
    # {"majority": <metrics>, "tfidf_logreg": <metrics>}, "predictions": [{"line", "text",
    # "label", "predicted", "scores"}]} (apps.finetuning.scores)
    evaluation = models.JSONField(default=dict, blank=True)
    result_version = models.OneToOneField(
        "catalog.ModelVersion",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="finetune_job",
    )

    training_started_at = models.DateTimeField(null=True, blank=True)
    # The eval set run on the base and on the result once it is deployed (chat jobs), and the
    # two runs.
    eval_set = models.ForeignKey(
        "evals.EvalSet", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    eval_base_run = models.ForeignKey(
        "evals.EvalRun", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    eval_result_run = models.ForeignKey(
        "evals.EvalRun", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta(WorkRecord.Meta):
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"ftjob-{self.id.hex[:12]}"

    @property
    def openai_id(self) -> str:
        return f"ftjob-{self.id.hex}"

    @property
    def fine_tuned_model(self) -> str | None:
        return self.result_version.model.slug if self.result_version else None

    @property
    def settings_shown(self) -> dict[str, Any]:
        """The hyperparameters that apply to this kind of job and method."""
        skip = {"test_fraction"} if self.kind == self.Kind.CHAT else {"lora_rank", "lora_alpha"}
        if self.method != self.Method.LORA:
            skip |= {"lora_rank", "lora_alpha"}
        return {k: v for k, v in self.hyperparameters.items() if k not in skip}

    @property
    def progress(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0

    @property
    def eta_seconds(self) -> int | None:
        """Remaining training time at the pace so far (evaluation at the end not included)."""
        if self.status != self.Status.RUNNING or not self.step or not self.training_started_at:
            return None
        assert self.progress_at is not None
        elapsed = (self.progress_at - self.training_started_at).total_seconds()
        return max(0, math.ceil(elapsed / self.step * (self.total_steps - self.step)))


class JobEvent(models.Model):
    """One line of a job's log: a state change, a training step's figures, an evaluation."""

    class Kind(models.TextChoices):
        STATUS = "status", "Status"
        STEP = "step", "Training step"
        EVAL = "eval", "Evaluation"
        MESSAGE = "message", "Message"

    class Level(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        ERROR = "error", "Error"

    job = models.ForeignKey(FineTuningJob, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(auto_now_add=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.INFO)
    message = models.TextField()
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.message

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.pk,
            "created_at": int(self.created_at.timestamp()),
            "kind": self.kind,
            "level": self.level,
            "message": self.message,
            "data": self.data,
        }
