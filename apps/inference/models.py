from __future__ import annotations

import uuid
from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import Q, Sum
from django.utils import timezone

from apps.catalog.models import ModelVersion


class GenerationQuerySet(models.QuerySet["Generation"]):
    def in_flight(self) -> GenerationQuerySet:
        return self.filter(status__in=Generation.IN_FLIGHT)


class Generation(models.Model):
    """One request to a model, from the chat or the API: its input, output, state and figures.

    The worker writes ``output`` as it goes, so a reader always finds the text streamed so far.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    IN_FLIGHT = (Status.QUEUED, Status.RUNNING)

    class Kind(models.TextChoices):
        CHAT = "chat"
        COMPLETION = "completion"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="generations"
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="generations"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    messages = models.JSONField(null=True, blank=True)  # chat input, as sent to the chat template
    prompt = models.TextField(blank=True)  # completion input
    params = models.JSONField(default=dict)
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    output = models.TextField(blank=True)
    finish_reason = models.CharField(max_length=20, blank=True)
    error_code = models.CharField(max_length=50, blank=True)
    error_message = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_second = models.FloatField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # The Celery worker running it (its heartbeat tells whether it is still there).
    worker = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # When its task was last sent to the broker (apps.core.queues: lost messages are sent again).
    sent_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = GenerationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["sent_at"], condition=Q(status="queued"), name="generation_waiting"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status not in self.IN_FLIGHT

    @property
    def is_failed(self) -> bool:
        return self.status == self.Status.FAILED

    @property
    def param_summary(self) -> str:
        keys = ("temperature", "top_p", "max_tokens", "seed")
        return ", ".join(f"{k} {self.params[k]}" for k in keys if self.params.get(k) is not None)


class EmbeddingBatch(models.Model):
    """One request of texts to an encoder: embeddings (base64 float32 vectors) or classification
    (a label and the scores of every label per text), with its state and token count."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    class Kind(models.TextChoices):
        EMBEDDINGS = "embeddings"
        CLASSIFICATION = "classification"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="embedding_batches"
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.EMBEDDINGS)
    inputs = models.JSONField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    vectors = models.JSONField(null=True, blank=True)
    results = models.JSONField(null=True, blank=True)  # classification: [{"label", "scores"}]
    prompt_tokens = models.PositiveIntegerField(default=0)
    error_code = models.CharField(max_length=50, blank=True)
    error_message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(default=timezone.now)  # as Generation.sent_at
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["sent_at"], condition=Q(status="queued"), name="embedding_batch_waiting"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status != self.Status.QUEUED


class UsageQuerySet(models.QuerySet["UsageRecord"]):
    def since(self, moment: datetime) -> UsageQuerySet:
        return self.filter(created_at__gte=moment)

    def total_tokens(self) -> int:
        totals = self.aggregate(p=Sum("prompt_tokens"), c=Sum("completion_tokens"))
        return (totals["p"] or 0) + (totals["c"] or 0)


class UsageRecord(models.Model):
    """Tokens one request used, counted by the worker, for the chat and the API alike (streamed,
    cancelled and failed-midway requests included). The usage page and quotas read these."""

    class Source(models.TextChoices):
        CHAT = "chat"
        API = "api"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage"
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="usage"
    )
    model = models.ForeignKey("catalog.LanguageModel", on_delete=models.CASCADE, related_name="+")
    source = models.CharField(max_length=10, choices=Source.choices)
    kind = models.CharField(max_length=20)  # chat, completion, embeddings or classification
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    generation = models.OneToOneField(
        Generation, on_delete=models.SET_NULL, null=True, blank=True, related_name="usage"
    )
    embedding_batch = models.OneToOneField(
        EmbeddingBatch, on_delete=models.SET_NULL, null=True, blank=True, related_name="usage"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = UsageQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "created_at"])]

    def __str__(self) -> str:
        return f"{self.user_id} {self.kind} {self.prompt_tokens}+{self.completion_tokens}"


class WorkerQuerySet(models.QuerySet["Worker"]):
    def live(self) -> WorkerQuerySet:
        """Workers whose last heartbeat is recent enough (WORKER_LOST_SECONDS)."""
        from datetime import timedelta

        from django.utils import timezone

        since = timezone.now() - timedelta(seconds=settings.WORKER_LOST_SECONDS)
        return self.filter(last_seen__gte=since, stopped_at__isnull=True)


class Worker(models.Model):
    """A Celery worker as its last heartbeat described it (``apps.inference.heartbeat``).

    One row per worker name; a restarted worker takes its row over. A worker is lost when its
    heartbeat is older than WORKER_LOST_SECONDS and it did not say it was stopping.
    """

    hostname = models.CharField(max_length=255, unique=True)  # Celery's name: "celery@host"
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    queues = models.JSONField(default=list)
    device = models.CharField(max_length=255)  # "NVIDIA H100 80GB HBM3, 79.2 GiB" or "CPU, 2 cores"
    # [{"key", "kind", "version_id", "state", "memory_bytes", "in_use", "idle_seconds"}]
    loaded = models.JSONField(default=list)
    memory_bytes = models.BigIntegerField(default=0)  # the process's resident memory
    models_bytes = models.BigIntegerField(default=0)  # what its loaded models take
    memory_budget_bytes = models.BigIntegerField(default=0)  # 0: no budget
    gpu_memory_bytes = models.BigIntegerField(null=True, blank=True)
    in_flight = models.PositiveIntegerField(default=0)
    # Counters and histograms since the process started, for /metrics (apps.inference.telemetry).
    metrics = models.JSONField(default=dict)
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    objects = WorkerQuerySet.as_manager()

    class Meta:
        ordering = ["hostname"]

    def __str__(self) -> str:
        return self.hostname

    @property
    def state(self) -> str:
        from datetime import timedelta

        from django.utils import timezone

        if self.stopped_at is not None:
            return "stopped"
        if self.last_seen < timezone.now() - timedelta(seconds=settings.WORKER_LOST_SECONDS):
            return "lost"
        return "live"
