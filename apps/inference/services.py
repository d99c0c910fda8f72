"""Creating, cancelling and running generations. The worker side is ``generation_run``."""

from __future__ import annotations

import base64
import contextlib
import logging
import time
from datetime import timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.accounts.models import ApiKey, User
from apps.catalog.models import ModelVersion
from apps.catalog.services import version_record_load
from apps.core.errors import ErrorCode
from apps.core.queues import enqueue_on_commit, requeue_stale

from . import telemetry
from .engines import Kind
from .models import EmbeddingBatch, Generation, UsageRecord
from .protocol import (
    EngineError,
    Finished,
    GenerationRequest,
    Idle,
    ModelSpec,
    SamplingParams,
    TokenDelta,
)
from .streaming import embedding_group, publish, publish_to

logger = logging.getLogger(__name__)


def model_spec(version: ModelVersion) -> ModelSpec:
    return ModelSpec(
        key=version.key,
        source_kind=version.source_kind,  # type: ignore[arg-type]
        source=version.source,
        context_length=version.context_length,
        base=model_spec(version.base_version) if version.base_version else None,
        revision=version.revision,
        dtype=version.dtype,
        device=version.device,
        chat_template=version.chat_template,
        version_id=version.pk,
    )


def generation_create(
    *,
    user: User,
    model_version: ModelVersion,
    params: SamplingParams,
    messages: list[dict[str, str]] | None = None,
    prompt: str = "",
    api_key: ApiKey | None = None,
) -> Generation:
    """Record a generation and enqueue it on the inference queue once the transaction commits.

    Precondition: ``model_version`` came through ``access_model`` for ``user``; ``params`` are
    validated. Call inside the caller's ``transaction.atomic`` when other rows go with it.
    """
    from .tasks import run_generation

    generation = Generation.objects.create(
        user=user,
        api_key=api_key,
        model_version=model_version,
        kind=Generation.Kind.CHAT if messages is not None else Generation.Kind.COMPLETION,
        messages=messages,
        prompt=prompt,
        params=params.model_dump(mode="json"),
    )
    enqueue_on_commit(run_generation, generation.id)
    return generation


def version_test_prompt(*, version: ModelVersion, actor: User, prompt: str) -> Generation:
    """An admin's test of ``version`` (active or not): one generation of the admin's own, with the
    version's default parameters and at most 128 new tokens, through a worker like any other.
    Precondition: the version's model is a chat or completion model."""
    from apps.audit.models import AuditEntry
    from apps.audit.services import audit_record

    defaults = {"temperature": 0.0, **version.default_params}
    defaults["max_tokens"] = min(int(defaults.get("max_tokens", 128)), 128)
    with transaction.atomic():
        generation = generation_create(
            user=actor,
            model_version=version,
            params=SamplingParams.parse(defaults),
            messages=[{"role": "user", "content": prompt}]
            if version.model.task == "chat"
            else None,
            prompt="" if version.model.task == "chat" else prompt,
        )
        audit_record(
            actor=actor,
            action=AuditEntry.Action.TEST,
            target=version,
            changes={"generation": str(generation.pk)},
        )
    return generation


def generation_cancel(*, generation: Generation) -> bool:
    """Stop ``generation``, keeping the text so far. False if it had already finished.

    One still queued is cancelled here and now (a worker that picks it up later leaves it alone),
    so a stop works even while no worker is there; a running one is stopped by its worker, which
    polls ``cancel_requested``.
    """
    in_flight = Generation.objects.filter(pk=generation.pk, status__in=Generation.IN_FLIGHT)
    if in_flight.filter(status=Generation.Status.QUEUED).update(
        status=Generation.Status.CANCELLED,
        cancel_requested=True,
        finish_reason="cancelled",
        finished_at=timezone.now(),
    ):
        done = {
            "type": "generation.done",
            "generation": str(generation.pk),
            "status": Generation.Status.CANCELLED,
        }
        transaction.on_commit(lambda: publish(generation.pk, done))
        return True
    return bool(in_flight.update(cancel_requested=True))


def generation_run(*, generation_id: str, worker: str = "") -> None:
    """Run one generation to its end on this worker (named ``worker``, for the reaper).
    Idempotent: a finished one is left alone.

    Writes the output as it streams (before each published delta), then the final state and
    figures. Never raises: every failure ends as a failed row with a code and a readable reason.
    """
    generation = (
        Generation.objects.select_related("model_version__model").filter(pk=generation_id).first()
    )
    if generation is None or generation.is_finished:
        return
    if generation.cancel_requested:
        _finish(generation, Generation.Status.CANCELLED, finish_reason="cancelled")
        return
    # A generation found running was interrupted by a lost worker and starts over, but only once
    # it is older than any live run could be: a redelivery must never run it twice at once. The
    # claim is a compare-and-set on ``attempts``; later writes of this run carry the same number.
    now = timezone.now()
    stale = now - timedelta(seconds=settings.INFERENCE_MAX_SECONDS + 60)
    claimable = (
        Q(status=Generation.Status.QUEUED)
        | Q(status=Generation.Status.RUNNING, started_at__isnull=True)
        | Q(status=Generation.Status.RUNNING, started_at__lt=stale)
    )
    claimed = Generation.objects.filter(
        claimable, pk=generation.pk, attempts=generation.attempts
    ).update(
        status=Generation.Status.RUNNING,
        started_at=now,
        output="",
        completion_tokens=0,
        attempts=generation.attempts + 1,
        worker=worker,
    )
    if not claimed:  # cancelled, or another worker has it
        return
    generation.status, generation.started_at, generation.output = Generation.Status.RUNNING, now, ""
    generation.attempts += 1
    try:
        _stream(generation)
    except SoftTimeLimitExceeded:
        _fail(generation, ErrorCode.TIMEOUT, "The answer took too long and was stopped.")
    except Exception:
        logger.exception("generation %s failed", generation.pk)
        _fail(generation, ErrorCode.INTERNAL, "The worker failed while answering; try again.")


def generations_reap() -> int:
    """Fail the running generations whose worker is gone: its heartbeat stopped, it shut down, or
    a new process has taken its name since the generation started. The text so far is kept.
    Only generations of workers that beat are judged. Returns how many were failed."""
    from .models import Worker

    running = Generation.objects.filter(status=Generation.Status.RUNNING).exclude(worker="")
    candidates = list(running.only("pk", "attempts", "worker", "started_at"))
    if not candidates:
        return 0
    workers = {
        w.hostname: w for w in Worker.objects.filter(hostname__in={g.worker for g in candidates})
    }
    reaped = 0
    for generation in candidates:
        worker = workers.get(generation.worker)
        if worker is None or generation.started_at is None:
            continue
        gone = worker.state != "live" or worker.started_at > generation.started_at
        if not gone:
            continue
        failed = Generation.objects.filter(
            pk=generation.pk, attempts=generation.attempts, status=Generation.Status.RUNNING
        ).update(
            status=Generation.Status.FAILED,
            finish_reason="error",
            error_code=ErrorCode.WORKER_LOST,
            error_message="The worker writing this answer stopped before it finished; "
            "the text so far is kept. Try again.",
            finished_at=timezone.now(),
        )
        if failed:
            reaped += 1
            logger.warning("generation %s failed: worker %s lost", generation.pk, worker)
            publish(
                generation.pk,
                {
                    "type": "generation.done",
                    "generation": str(generation.pk),
                    "status": Generation.Status.FAILED,
                },
            )
    return reaped


def inference_requeue_stranded() -> int:
    """Send again the tasks of generations and embedding batches still queued REQUEUE_SECONDS
    after their message went out: the broker lost it (see apps.core.queues)."""
    from .tasks import run_embedding, run_generation

    older_than = settings.REQUEUE_SECONDS
    waiting = Generation.objects.filter(status=Generation.Status.QUEUED, cancel_requested=False)
    batches = EmbeddingBatch.objects.filter(status=EmbeddingBatch.Status.QUEUED)
    return requeue_stale(waiting, run_generation, older_than=older_than) + requeue_stale(
        batches, run_embedding, older_than=older_than
    )


def _stream(generation: Generation) -> None:
    from .engines import lease

    with lease(model_spec(generation.model_version)) as engine:
        _stream_from(engine, generation)


def _stream_from(engine: Any, generation: Generation) -> None:
    params = SamplingParams.model_validate(generation.params)
    request = GenerationRequest(
        request_id=str(generation.pk),
        params=params,
        messages=generation.messages,
        prompt=generation.prompt if generation.messages is None else None,
        deadline_s=settings.INFERENCE_MAX_SECONDS,
    )
    started = time.monotonic()
    created_lag = (timezone.now() - generation.created_at).total_seconds()
    pending, tokens = "", 0
    first_token_at: float | None = None
    last_token_at: float | None = None
    last_flush = last_cancel_check = started
    for event in engine.generate(request, idle_every=settings.CANCEL_POLL_SECONDS):
        now = time.monotonic()
        if isinstance(event, TokenDelta):
            if first_token_at is None:
                first_token_at = now
            last_token_at = now
            pending += event.text
            tokens += event.tokens
        if pending and (now - last_flush >= settings.STREAM_FLUSH_SECONDS or not generation.output):
            if _flush(generation, pending):
                engine.abort(request.request_id)
            pending, last_flush = "", now
            last_cancel_check = now  # the flush looked at cancel_requested too
        if now - last_cancel_check >= settings.CANCEL_POLL_SECONDS:
            last_cancel_check = now
            if Generation.objects.filter(pk=generation.pk, cancel_requested=True).exists():
                engine.abort(request.request_id)
        if isinstance(event, Idle | TokenDelta):
            continue
        if pending:
            _flush(generation, pending)
        if isinstance(event, EngineError):
            generation.completion_tokens = tokens  # what was generated before it failed is metered
            if event.code == ErrorCode.MODEL_LOAD_FAILED:
                _note_load(generation.model_version, event.message)
            _fail(generation, event.code, event.message)
            return
        assert isinstance(event, Finished)
        _note_load(generation.model_version, "")
        generation.prompt_tokens = event.prompt_tokens
        generation.completion_tokens = event.completion_tokens
        if first_token_at is not None and last_token_at is not None:
            generation.ttft_ms = round((created_lag + first_token_at - started) * 1000)
            if event.completion_tokens > 1 and last_token_at > first_token_at:
                generation.tokens_per_second = round(
                    (event.completion_tokens - 1) / (last_token_at - first_token_at), 2
                )
        if event.finish_reason == "cancelled":
            status = Generation.Status.CANCELLED
        elif event.finish_reason == "timeout":
            generation.error_code = ErrorCode.TIMEOUT
            generation.error_message = "The answer reached the time limit and was stopped."
            status = Generation.Status.FAILED
        else:
            status = Generation.Status.SUCCEEDED
        _finish(generation, status, finish_reason=event.finish_reason)
        return


def _flush(generation: Generation, pending: str) -> bool:
    """Append ``pending`` to the output: first in the row, then as a published delta. True when
    a stop was asked for (the same write finds out, so streaming costs one query per flush)."""
    offset = len(generation.output)
    generation.output += pending
    # Only while it is running: a row the reaper has failed meanwhile stays as it is.
    mine = Generation.objects.filter(
        pk=generation.pk, attempts=generation.attempts, status=Generation.Status.RUNNING
    )
    stop = not mine.filter(cancel_requested=False).update(output=generation.output)
    if stop:  # cancelled, or no longer this run's: the text is written all the same
        mine.update(output=generation.output)
    publish(
        generation.pk,
        {
            "type": "generation.delta",
            "generation": str(generation.pk),
            "offset": offset,
            "text": pending,
        },
    )
    return stop


def _fail(generation: Generation, code: ErrorCode, message: str) -> None:
    generation.error_code = code
    generation.error_message = message
    _finish(generation, Generation.Status.FAILED, finish_reason="error")


def _finish(generation: Generation, status: str, *, finish_reason: str) -> None:
    generation.status = status
    generation.finish_reason = finish_reason
    generation.finished_at = timezone.now()
    fields: dict[str, Any] = {
        f: getattr(generation, f)
        for f in (
            "status",
            "output",
            "finish_reason",
            "finished_at",
            "error_code",
            "error_message",
            "prompt_tokens",
            "completion_tokens",
            "ttft_ms",
            "tokens_per_second",
        )
    }
    with transaction.atomic():
        mine = Generation.objects.filter(
            pk=generation.pk, attempts=generation.attempts, status__in=Generation.IN_FLIGHT
        )
        if not mine.update(**fields):
            return  # a later run owns the row now, or the reaper has ended it
        if generation.prompt_tokens or generation.completion_tokens:
            _record_usage(
                generation=generation,
                kind=generation.kind,
                prompt_tokens=generation.prompt_tokens or 0,
                completion_tokens=generation.completion_tokens,
            )
    _count(generation)
    publish(
        generation.pk,
        {"type": "generation.done", "generation": str(generation.pk), "status": status},
    )


def _count(generation: Generation) -> None:
    """Add a finished generation to this worker's figures (``/metrics``)."""
    tokens = generation.completion_tokens or 0
    rate = generation.tokens_per_second
    telemetry.record_generation(
        status=generation.status,
        prompt_tokens=generation.prompt_tokens or 0,
        completion_tokens=tokens,
        ttft_seconds=generation.ttft_ms / 1000 if generation.ttft_ms is not None else None,
        seconds_per_token=1 / rate if rate else None,
    )


def _note_load(version: ModelVersion, error: str) -> None:
    """Record on the version whether it loaded, when that is news (one query at most)."""
    status = ModelVersion.LoadStatus.FAILED if error else ModelVersion.LoadStatus.READY
    if version.load_status != status or version.load_error != error[:2000]:
        version_record_load(version_id=version.pk, error=error)
        version.load_status, version.load_error = status, error[:2000]


def version_load(*, version_id: int, timeout: float = 600) -> str:
    """Load ``version_id`` in this worker process now (an admin's "load on workers", or warming
    at start) and record the outcome on the version. Returns the error, or "" once it serves."""
    from . import engines

    version = ModelVersion.objects.select_related("model").get(pk=version_id)
    spec = model_spec(version)
    task = version.model.task
    kind: Kind = {"embeddings": "embeddings", "classification": "classifier"}.get(  # type: ignore[assignment]
        task, "generate"
    )
    try:
        # Held while it loads, so another load cannot evict it half-way.
        with engines.lease(spec, kind) as server:
            if kind == "generate":
                server.wait_loaded(timeout)
        error = ""
    except Exception as exc:  # a model that cannot load must not take the worker down
        logger.exception("loading %s failed", spec.key)
        error = f"The model could not be loaded: {exc}"
    version_record_load(version_id=version_id, error=error)
    return error


def embedding_create(
    *,
    user: User,
    model_version: ModelVersion,
    inputs: list[str],
    api_key: ApiKey | None = None,
    kind: str = EmbeddingBatch.Kind.EMBEDDINGS,
) -> EmbeddingBatch:
    """Record an embeddings (or classification) request and enqueue it once the transaction
    commits. Precondition: ``model_version`` came through ``access_model`` for ``user``, has the
    task that ``kind`` needs, and ``inputs`` are validated."""
    from .tasks import run_embedding

    batch = EmbeddingBatch.objects.create(
        user=user, model_version=model_version, inputs=inputs, api_key=api_key, kind=kind
    )
    enqueue_on_commit(run_embedding, batch.pk)
    return batch


def embedding_run(*, batch_id: str) -> None:
    """Embed or classify one batch on this worker. Idempotent; never raises: failures end as a
    failed row."""
    from .engines import lease

    batch = (
        EmbeddingBatch.objects.select_related("model_version__model").filter(pk=batch_id).first()
    )
    if batch is None or batch.is_finished:
        return
    classify = batch.kind == EmbeddingBatch.Kind.CLASSIFICATION
    result: Any
    with contextlib.ExitStack() as held:
        try:
            kind: Kind = "classifier" if classify else "embeddings"
            encoder = held.enter_context(lease(model_spec(batch.model_version), kind))
        except Exception as exc:  # a model that cannot load must not take the worker down
            logger.exception("encoder model for batch %s failed to load", batch.pk)
            message = f"The model could not be loaded: {exc}"
            result = EngineError(ErrorCode.MODEL_LOAD_FAILED, message)
            _note_load(batch.model_version, message)
        else:
            try:
                result = encoder.classify(batch.inputs) if classify else encoder.embed(batch.inputs)
            except Exception:
                logger.exception("%s batch %s failed", batch.kind, batch.pk)
                result = EngineError(
                    ErrorCode.INTERNAL, f"The worker failed during {batch.kind}; try again."
                )
    if isinstance(result, EngineError):
        batch.status = EmbeddingBatch.Status.FAILED
        batch.error_code, batch.error_message = result.code, result.message
    else:
        batch.status = EmbeddingBatch.Status.SUCCEEDED
        if classify:
            batch.results = [
                {"label": label, "scores": scores}
                for label, scores in zip(result.labels, result.scores, strict=True)
            ]
        else:
            batch.vectors = [base64.b64encode(row.tobytes()).decode() for row in result.vectors]
        batch.prompt_tokens = result.tokens
    batch.finished_at = timezone.now()
    with transaction.atomic():
        batch.save()
        if batch.prompt_tokens:
            _record_usage(
                embedding_batch=batch,
                kind=batch.kind,
                prompt_tokens=batch.prompt_tokens,
                completion_tokens=0,
            )
    publish_to(embedding_group(batch.pk), {"type": "embedding.done", "batch": str(batch.pk)})


def _record_usage(
    *,
    kind: str,
    prompt_tokens: int,
    completion_tokens: int,
    generation: Generation | None = None,
    embedding_batch: EmbeddingBatch | None = None,
) -> None:
    """One usage row per finished request (idempotent: a re-run does not count twice)."""
    source = generation or embedding_batch
    assert source is not None
    UsageRecord.objects.update_or_create(
        generation=generation,
        embedding_batch=embedding_batch,
        defaults={
            "user_id": source.user_id,
            "api_key_id": source.api_key_id,
            "model_id": source.model_version.model_id,
            "source": UsageRecord.Source.API if source.api_key_id else UsageRecord.Source.CHAT,
            "kind": kind,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
        },
    )
