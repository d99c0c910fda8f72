"""The contracts every app's work shares: the worker heartbeat rows, and the abstract work record
(a generation, an embedding batch, a fine-tuning job) whose lifecycle ``apps.core.work`` runs."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class WorkerQuerySet(models.QuerySet["Worker"]):
    def live(self) -> WorkerQuerySet:
        """Workers whose last heartbeat is recent enough (WORKER_LOST_SECONDS)."""
        since = timezone.now() - timedelta(seconds=settings.WORKER_LOST_SECONDS)
        return self.filter(last_seen__gte=since, stopped_at__isnull=True)

    def serving(self, queue: str) -> list[str]:
        """The names of the live workers that consume ``queue``."""
        return [w.hostname for w in self.live() if queue in w.queues]


class Worker(models.Model):
    """A Celery worker as its last heartbeat described it (``playground.worker``). The one source
    of liveness: work whose worker is not live is reaped (``apps.core.work.work_reap``).

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
        if self.stopped_at is not None:
            return "stopped"
        if self.last_seen < timezone.now() - timedelta(seconds=settings.WORKER_LOST_SECONDS):
            return "lost"
        return "live"


class WorkStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class WorkRecord(models.Model):
    """A piece of work a Celery worker does, as the database records it: the row is the record,
    a broker message only its doorbell.

    Its life: ``queued`` (``sent_at`` is when its message last went out) → claimed by one worker
    (``attempts`` counts claims; every write of a run carries its number, so a run that lost the
    row cannot overwrite it) → one of the WORKING states → a final state with its error, if any,
    and whether trying again can help (``retryable``). ``attempt_log`` keeps each claim: which
    worker, when, and how it ended. The functions are in ``apps.core.work``.
    """

    Status = WorkStatus
    WAITING: tuple[str, ...] = (WorkStatus.QUEUED,)
    WORKING: tuple[str, ...] = (WorkStatus.RUNNING,)

    status = models.CharField(
        max_length=20, choices=WorkStatus.choices, default=WorkStatus.QUEUED, db_index=True
    )
    error_code = models.CharField(max_length=50, blank=True)
    error_message = models.TextField(blank=True)
    retryable = models.BooleanField(default=False)  # a failure that trying again may mend
    cancel_requested = models.BooleanField(default=False)
    attempts = models.PositiveIntegerField(default=0)
    # The Celery worker running it (its heartbeat tells whether it is still there).
    worker = models.CharField(max_length=255, blank=True)
    attempt_log = models.JSONField(default=list, blank=True)  # [{"worker", "started_at", "ended"}]
    created_at = models.DateTimeField(auto_now_add=True)
    # When its task was last sent to the broker (apps.core.queues: lost messages are sent again).
    sent_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        indexes = [
            models.Index(fields=["sent_at"], condition=Q(status="queued"), name="%(class)s_waiting")
        ]

    @classmethod
    def in_flight_states(cls) -> tuple[str, ...]:
        return cls.WAITING + cls.WORKING

    @property
    def is_finished(self) -> bool:
        return self.status not in self.in_flight_states()

    @property
    def is_failed(self) -> bool:
        return self.status == WorkStatus.FAILED
