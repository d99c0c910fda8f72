"""What a worker does for the Batch API: work through one batch.

A batch is a work record a worker claims (``run_batch``); its runner keeps up to
BATCH_CONCURRENCY of its requests in flight as ordinary generations (or embedding requests) at
batch priority, which every interactive request overtakes in the engine, and starts the next as
each one ends. Each request's work record is made once, in the transaction that marks the
request started, so a request never runs twice; a runner whose worker is lost is reaped like
any work record and the next worker's runner goes on from the rows, while the requests that
were in flight are resumed by their own reaper. When every request has ended, the runner writes
the output and error files (in the input's order) and ends the batch.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.core import runtime
from apps.core.errors import ServiceError
from apps.core.work import (
    this_run,
    work_claim,
    work_finish,
    work_hand_back,
    work_reap,
    work_requeue_stale,
)
from apps.inference.models import EmbeddingBatch, Generation, Priority
from apps.inference.services import generation_cancel
from apps.inference.usage import quota_pause

from .batches import ENDPOINTS
from .errors import ApiError
from .models import ApiFile, Batch, BatchRequest
from .schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, parse
from .services import completion_start, embeddings_start
from .serving import Completion, embeddings_body, failure

logger = logging.getLogger(__name__)

_ENDED = {"cancelled": "batch_cancelled", "expired": "batch_expired"}
_ENDED_MESSAGE = {
    "cancelled": "The batch was cancelled before this request finished.",
    "expired": "The batch's completion window ended before this request finished.",
}


def _record(request: BatchRequest) -> Generation | EmbeddingBatch | None:
    return request.generation or request.embedding


def _start(batch: Batch, request: BatchRequest) -> None:
    """Make the work record of ``request`` (once: the row is marked started in the same
    transaction), or record why it cannot start."""
    with transaction.atomic():
        if not BatchRequest.objects.filter(pk=request.pk, started=False).update(started=True):
            return
        body = parse(ENDPOINTS[batch.endpoint], request.body)
        try:
            with transaction.atomic():
                if isinstance(body, EmbeddingRequest):
                    embedding = embeddings_start(
                        user=batch.user, api_key=batch.api_key, body=body, priority=Priority.BATCH
                    )
                    BatchRequest.objects.filter(pk=request.pk).update(embedding=embedding)
                else:
                    (generation,) = completion_start(
                        user=batch.user, api_key=batch.api_key, body=body, priority=Priority.BATCH
                    )
                    BatchRequest.objects.filter(pk=request.pk).update(generation=generation)
        except (ServiceError, ApiError) as error:
            refusal = error if isinstance(error, ApiError) else ApiError.from_service(error)
            body_of = {"status_code": refusal.status, "body": refusal.body()}
            BatchRequest.objects.filter(pk=request.pk).update(error=body_of)


def _tally(batch: Batch) -> tuple[list[BatchRequest], list[BatchRequest]]:
    """The batch's requests that have not started and those still in flight; writes the
    counts of those that have ended."""
    requests = list(
        BatchRequest.objects.filter(batch=batch).select_related("generation", "embedding")
    )
    pending, running, completed, failed = [], [], 0, 0
    for request in requests:
        record = _record(request)
        if not request.started:
            pending.append(request)
        elif request.error is not None:
            failed += 1
        elif record is None or not record.is_finished:
            running.append(request)
        elif record.status == record.Status.SUCCEEDED:
            completed += 1
        else:
            failed += 1
    if (completed, failed) != (batch.completed, batch.failed):
        Batch.objects.filter(pk=batch.pk).update(completed=completed, failed=failed)
        batch.completed, batch.failed = completed, failed
    return pending, running


def _result(batch: Batch, request: BatchRequest, ended: str) -> tuple[bool, dict[str, Any]]:
    """One line of the output (True) or the error file."""
    line: dict[str, Any] = {
        "id": f"batch_req_{request.pk.hex}",
        "custom_id": request.custom_id,
        "response": None,
        "error": None,
    }
    record = _record(request)
    if request.error is not None:
        line["response"] = request.error
        return False, line
    if record is None or not record.is_finished or record.status == record.Status.CANCELLED:
        line["error"] = {"code": _ENDED[ended], "message": _ENDED_MESSAGE[ended]}
        return False, line
    if record.status == record.Status.FAILED:
        error = failure(record, param="input" if isinstance(record, EmbeddingBatch) else "messages")
        line["response"] = {
            "status_code": error.status,
            "request_id": record.pk.hex,
            "body": error.body(),
        }
        return False, line
    body = parse(ENDPOINTS[batch.endpoint], request.body)
    if isinstance(record, EmbeddingBatch):
        answer = embeddings_body(record, body)
    else:
        chat = isinstance(body, ChatCompletionRequest)
        assert isinstance(body, ChatCompletionRequest | CompletionRequest)
        completion = Completion(
            [record],
            body.model,
            chat=chat,
            echo=body.prompt if isinstance(body, CompletionRequest) and body.echo else "",
            tools={f.name for f in body.functions()} if chat else set(),  # type: ignore[union-attr]
        )
        answer = completion.full({str(record.pk): record.output}, {str(record.pk): record})
    line["response"] = {"status_code": 200, "request_id": record.pk.hex, "body": answer}
    return True, line


def _file(batch: Batch, lines: list[dict[str, Any]], name: str) -> ApiFile | None:
    if not lines:
        return None
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    return ApiFile.objects.create(
        owner_id=batch.user_id,
        purpose=ApiFile.Purpose.BATCH_OUTPUT,
        filename=f"{batch.openai_id}_{name}.jsonl",
        content=text,
        bytes=len(text.encode()),
    )


def _files(batch: Batch, ended: str) -> dict[str, Any]:
    requests = BatchRequest.objects.filter(batch=batch).select_related("generation", "embedding")
    output: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for request in requests:
        ok, line = _result(batch, request, ended)
        (output if ok else errors).append(line)
    return {
        "output_file": _file(batch, output, "output"),
        "error_file": _file(batch, errors, "error"),
    }


def batch_finalize(batch: Batch) -> None:
    """Write the files of a batch cancelled before any runner took it (its requests: none
    started)."""
    _tally(batch)
    with transaction.atomic():
        Batch.objects.filter(pk=batch.pk, output_file=None, error_file=None).update(
            **_files(batch, "cancelled")
        )


def _finish(batch: Batch, ended: str) -> None:
    """Write the output and error files and end the batch (``ended``: completed, cancelled or
    expired)."""
    now = timezone.now()
    this_run(batch).update(finalizing_at=now)
    batch.finalizing_at = now
    _tally(batch)
    with transaction.atomic():
        files = _files(batch, ended)
        status = Batch.Status.SUCCEEDED if ended == "completed" else Batch.Status.CANCELLED
        if not work_finish(batch, status=status, **files):
            transaction.set_rollback(True)


def batch_run(*, batch_id: str, worker: str) -> None:
    """Claim the batch and work through it (see the module's doc)."""
    batch = Batch.objects.select_related("user", "api_key").filter(pk=batch_id).first()
    if batch is None or batch.is_finished or not work_claim(batch, worker=worker):
        return
    logger.info("batch %s: running on %s", batch.pk, worker)
    try:
        while True:
            if runtime.stopping.is_set():
                from .tasks import run_batch

                work_hand_back(batch, run_batch)
                return
            state = (
                Batch.objects.filter(pk=batch.pk)
                .values("cancel_requested", "status", "expires_at")
                .first()
            )
            if state is None or not this_run(batch).exists():
                return  # deleted, or taken back
            pending, running = _tally(batch)
            expired = timezone.now() >= state["expires_at"]
            if state["cancel_requested"] or expired:
                ended = "cancelled" if state["cancel_requested"] else "expired"
                if expired and not batch.expired_at:
                    batch.expired_at = timezone.now()
                    this_run(batch).update(expired_at=batch.expired_at)
                for request in running:
                    if request.generation is not None:
                        generation_cancel(generation=request.generation)
                if not running:
                    _finish(batch, ended)
                    return
            elif not pending and not running:
                _finish(batch, "completed")
                return
            else:
                _top_up(batch, pending, running)
            time.sleep(settings.BATCH_POLL_SECONDS)
    except Exception:
        logger.exception("batch %s failed", batch.pk)
        raise


def _top_up(batch: Batch, pending: list[BatchRequest], running: list[BatchRequest]) -> None:
    """Start the next requests, up to BATCH_CONCURRENCY in flight, while the account's daily
    token quota allows; a used-up quota pauses the batch (and says why) rather than failing its
    requests."""
    room = settings.BATCH_CONCURRENCY - len(running)
    if room <= 0 or not pending:
        return
    paused = quota_pause(batch.user)
    if paused != batch.paused:
        batch.paused = paused
        this_run(batch).update(paused=paused)
    if paused:
        return
    for request in pending[:room]:
        _start(batch, request)


def batches_reap() -> int:
    """Take back the batches of lost workers: each goes back to the queue, and the next
    worker's runner goes on where the rows stand."""
    from .tasks import run_batch

    reaped = work_reap(Batch, task=run_batch, lost="The worker stopped while running the batch.")
    return len(reaped)


def batches_requeue_stranded() -> int:
    """Send again the runner of a batch still queued REQUEUE_SECONDS after its message went
    out (the broker lost it)."""
    from .tasks import run_batch

    waiting = Batch.objects.filter(status=Batch.Status.QUEUED, cancel_requested=False)
    return work_requeue_stale(waiting, run_batch, older_than=settings.REQUEUE_SECONDS)
