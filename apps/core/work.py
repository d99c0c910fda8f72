"""The lifecycle of every work record (``apps.core.models.WorkRecord``): claim, finish, cancel,
requeue and reap. Generations, embedding batches and fine-tuning jobs all go through these.

- **claim**: a compare-and-set from a waiting state, so however many broker messages ask for a
  record, one worker runs it; the claim counts an attempt and logs the worker.
- **finish**: the end of one run, written only while the record is still that run's (same attempt,
  still working); a run that lost its record (reaped, or requeued and claimed again) writes nothing.
- **cancel**: a waiting record ends at once; a working one is asked to stop (its worker polls).
- **requeue**: a record that waited too long after its message went out has it sent again (the
  broker lost it: a Redis restart); a record a lost worker held goes back to waiting.
- **reap**: any worker's heartbeat looks at the records working on workers that are gone (their
  heartbeat stopped, they shut down, or a new process took their name since) and requeues them
  (resumable work, within WORK_MAX_ATTEMPTS) or fails them with ``worker_lost``.

Liveness comes only from the ``Worker`` heartbeat rows; reading a record never writes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from django.apps import apps
from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from .errors import ErrorCode
from .models import Worker, WorkRecord, WorkStatus
from .queues import enqueue_on_commit

logger = logging.getLogger(__name__)

R = TypeVar("R", bound=WorkRecord)


@dataclass(frozen=True)
class Failure:
    """Why a record failed: a code, a message a person can act on, and whether trying again can
    help (by default, what the code says)."""

    code: ErrorCode
    message: str
    retryable: bool | None = None

    @property
    def can_retry(self) -> bool:
        return self.code.retryable if self.retryable is None else self.retryable


def this_run(record: WorkRecord) -> models.QuerySet[Any]:
    """The record's row while it is still this run's: the same attempt, still working."""
    return type(record)._default_manager.filter(
        pk=record.pk, attempts=record.attempts, status__in=record.WORKING
    )


def work_hand_back(record: WorkRecord, task: Any) -> bool:
    """The worker is stopping: ``record`` (resumable work this run holds) goes back to waiting
    and ``task`` is sent for it once the transaction commits, for the next worker to go on
    where the rows stand. False when the run was no longer this one's."""
    from .queues import enqueue_on_commit

    with transaction.atomic():
        if not this_run(record).update(status=WorkStatus.QUEUED, worker="", sent_at=timezone.now()):
            return False
        enqueue_on_commit(task, record.pk)
    return True


def work_claim(record: WorkRecord, *, worker: str, status: str = WorkStatus.RUNNING) -> bool:
    """Take the waiting ``record`` for ``worker`` (compare-and-set on its state and attempts; one
    claimant wins). On success ``record`` holds the claimed state. False when it was claimed,
    cancelled or finished meanwhile. Precondition: ``record`` was just read."""
    now = timezone.now()
    log = [*record.attempt_log, {"worker": worker, "started_at": now.isoformat()}]
    fields = {
        "status": status,
        "attempts": record.attempts + 1,
        "worker": worker,
        "started_at": now,
        "attempt_log": log,
    }
    claimed = (
        type(record)
        ._default_manager.filter(
            pk=record.pk,
            attempts=record.attempts,
            status__in=record.WAITING,
            cancel_requested=False,
        )
        .update(**fields)
    )
    if claimed:
        for name, value in fields.items():
            setattr(record, name, value)
    return bool(claimed)


def _ended(log: list[dict[str, Any]], how: str) -> list[dict[str, Any]]:
    if not log:
        return log
    return [*log[:-1], {**log[-1], "ended": how, "ended_at": timezone.now().isoformat()}]


def work_finish(
    record: WorkRecord,
    *,
    status: str,
    failure: Failure | None = None,
    unless_cancelled: bool = False,
    **fields: Any,
) -> bool:
    """End this run of ``record`` with ``status`` (and ``failure``, and any other ``fields``).
    Written only while the record is still this run's (and, ``unless_cancelled``, while no stop
    was asked for); False, nothing written, otherwise. On success ``record`` holds the written
    values. Call inside the caller's transaction when other rows go with it."""
    values: dict[str, Any] = {"status": status, "finished_at": timezone.now(), **fields}
    if failure is not None:
        values.update(
            error_code=failure.code,
            error_message=failure.message,
            retryable=failure.can_retry,
        )
    values["attempt_log"] = _ended(record.attempt_log, failure.code if failure else status)
    mine = this_run(record)
    if unless_cancelled:
        mine = mine.filter(cancel_requested=False)
    if not mine.update(**values):
        return False
    for name, value in values.items():
        setattr(record, name, value)
    return True


def work_cancel(record: WorkRecord, **fields: Any) -> str:
    """Stop ``record``: one still waiting is cancelled now ("cancelled", with ``fields`` written
    too), a working one is asked to stop and its worker ends it at its next check ("requested").
    "" when it had already ended. A stop works even while no worker is there."""
    model = type(record)
    in_flight = model._default_manager.filter(pk=record.pk, status__in=model.in_flight_states())
    if in_flight.filter(status__in=model.WAITING).update(
        status=WorkStatus.CANCELLED, cancel_requested=True, finished_at=timezone.now(), **fields
    ):
        return "cancelled"
    if in_flight.update(cancel_requested=True):
        return "requested"
    return ""


def work_requeue_stale(waiting: models.QuerySet[Any], task: Any, *, older_than: float) -> int:
    """Send ``task`` again for each row of ``waiting`` (rows still waiting for a worker) whose
    message went out more than ``older_than`` seconds ago: the broker lost it. Each row is sent
    once per interval whichever workers sweep at the same time (the rows are taken with SKIP
    LOCKED). A duplicate message is harmless: the claim lets one through. Returns how many."""
    now = timezone.now()
    with transaction.atomic():
        stale = waiting.filter(sent_at__lt=now - timedelta(seconds=older_than))
        ids = list(
            stale.select_for_update(skip_locked=True)
            .order_by("sent_at")
            .values_list("pk", flat=True)[:1000]
        )
        waiting.model._default_manager.filter(pk__in=ids).update(sent_at=now)
        for pk in ids:
            enqueue_on_commit(task, pk)
    if ids:
        logger.warning(
            "sent %d %s messages again (waiting over %.0f s)", len(ids), task.name, older_than
        )
    return len(ids)


@dataclass
class Reaped:
    """What a reap did, by record id."""

    requeued: list[Any] = field(default_factory=list)
    failed: list[Any] = field(default_factory=list)
    cancelled: list[Any] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.requeued) + len(self.failed) + len(self.cancelled)


def work_reap(model: type[R], *, task: Any = None, lost: str | Callable[[Worker], str]) -> Reaped:
    """Take back the ``model`` records that workers which are gone left working. With ``task``
    (resumable work) a record goes back to waiting and ``task`` is sent for it, up to
    WORK_MAX_ATTEMPTS claims; otherwise, and after that, it fails with ``worker_lost`` and the
    message ``lost`` (or ``lost(worker)``). A record asked to stop ends cancelled. Only records of
    workers that have a heartbeat row are judged (a row is never pruned while work names it)."""
    working = model._default_manager.filter(status__in=model.WORKING).exclude(worker="")
    candidates = list(
        working.only("pk", "attempts", "worker", "started_at", "cancel_requested", "attempt_log")
    )
    reaped = Reaped()
    if not candidates:
        return reaped
    workers = {
        w.hostname: w for w in Worker.objects.filter(hostname__in={r.worker for r in candidates})
    }
    now = timezone.now()
    for record in candidates:
        worker = workers.get(record.worker)
        if worker is None or record.started_at is None:
            continue
        if worker.state == "live" and worker.started_at <= record.started_at:
            continue
        log = _ended(record.attempt_log, ErrorCode.WORKER_LOST)
        mine = this_run(record)
        with transaction.atomic():
            if record.cancel_requested:
                done = mine.update(status=WorkStatus.CANCELLED, finished_at=now, attempt_log=log)
                outcome = reaped.cancelled
            elif task is not None and record.attempts < settings.WORK_MAX_ATTEMPTS:
                done = mine.update(
                    status=WorkStatus.QUEUED, worker="", sent_at=now, attempt_log=log
                )
                if done:
                    enqueue_on_commit(task, record.pk)
                outcome = reaped.requeued
            else:
                done = mine.update(
                    status=WorkStatus.FAILED,
                    error_code=ErrorCode.WORKER_LOST,
                    error_message=lost if isinstance(lost, str) else lost(worker),
                    retryable=True,
                    finished_at=now,
                    attempt_log=log,
                )
                outcome = reaped.failed
        if done:
            outcome.append(record.pk)
            logger.warning(
                "%s %s: worker %s lost (%s)", model.__name__, record.pk, worker, worker.state
            )
    return reaped


def work_expire(model: type[R], *, seconds: float, failure: Failure) -> list[Any]:
    """Fail the ``model`` records that have been working for longer than ``seconds``: a limit no
    run can overrun, not even one stuck inside a single long computation. Returns their ids."""
    cutoff = timezone.now() - timedelta(seconds=seconds)
    overdue = list(
        model._default_manager.filter(status__in=model.WORKING, started_at__lt=cutoff).only(
            "pk", "attempts", "status", "attempt_log"
        )
    )
    return [r.pk for r in overdue if work_finish(r, status=WorkStatus.FAILED, failure=failure)]


def worker_gone(record: WorkRecord) -> bool:
    """Whether ``record`` is working on a worker that is not live (the next live worker's
    heartbeat will reap it). A read: it writes nothing."""
    if record.status not in record.WORKING or not record.worker:
        return False
    worker = Worker.objects.filter(hostname=record.worker).first()
    return worker is not None and worker.state != "live"


def worker_rows_prune() -> None:
    """Drop the heartbeat rows of workers silent for a day that no working record names."""
    named: set[str] = set()
    for model in apps.get_models():
        if issubclass(model, WorkRecord):
            working = model._default_manager.filter(status__in=model.WORKING).exclude(worker="")
            named.update(working.values_list("worker", flat=True))
    Worker.objects.filter(last_seen__lt=timezone.now() - timedelta(days=1)).exclude(
        hostname__in=named
    ).delete()
