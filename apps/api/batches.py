"""The Batch API's web side: an input file checked line by line before anything is kept, a
batch created from it (every request checked as its endpoint would check it, so a batch never
runs a request its endpoint would refuse), cancelled, and shown in OpenAI's shapes. The runner
that works through a batch is ``apps.api.runner``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import Http404
from django.utils import timezone

from apps.accounts.models import ApiKey, User
from apps.core.errors import ServiceError, quoted
from apps.core.queues import enqueue_on_commit
from apps.core.work import work_cancel

from .errors import ApiError
from .models import ApiFile, Batch, BatchRequest
from .schemas import (
    MAX_METADATA,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    parse,
)
from .selectors import access_api_file
from .services import completion_check, embeddings_check

# What each endpoint's requests are, as its own view parses them.
ENDPOINTS: dict[str, type[ChatCompletionRequest | CompletionRequest | EmbeddingRequest]] = {
    "/v1/chat/completions": ChatCompletionRequest,
    "/v1/completions": CompletionRequest,
    "/v1/embeddings": EmbeddingRequest,
}
MAX_SHOWN_ERRORS = 50  # bad lines listed in one refusal
LINE_FIELDS = {"custom_id", "method", "url", "body"}


@dataclass(frozen=True)
class LineError:
    line: int
    message: str


class BatchFileInvalid(Exception):
    """Lines of an input file that cannot run; ``errors`` says which and why."""

    def __init__(self, errors: list[LineError], total: int | None = None) -> None:
        self.errors = errors[:MAX_SHOWN_ERRORS]
        count = total if total is not None else len(errors)
        shown = "" if count <= MAX_SHOWN_ERRORS else f" (the first {MAX_SHOWN_ERRORS} are listed)"
        first = errors[0]
        super().__init__(
            f"{count} line{'s' if count != 1 else ''} of the file cannot run{shown}; "
            f"line {first.line}: {first.message}"
        )

    def api_error(self, param: str) -> ApiError:
        return ApiError(
            400,
            str(self),
            code="invalid_file",
            param=param,
            details=[{"line": e.line, "message": e.message} for e in self.errors],
        )


def _line_problem(number: int, text: str, seen: set[str]) -> tuple[dict[str, Any] | None, str]:
    """One line as a request, or what is wrong with it."""
    try:
        value = json.loads(text)
    except ValueError:
        return None, "it is not valid JSON"
    if not isinstance(value, dict):
        return None, "it must be a JSON object with custom_id, method, url and body"
    unknown = sorted(set(value) - LINE_FIELDS)
    if unknown:
        return None, f"unknown field {unknown[0]} (a line has custom_id, method, url and body)"
    missing = sorted(LINE_FIELDS - set(value))
    if missing:
        return None, f"{missing[0]} is missing"
    custom_id = value["custom_id"]
    if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= 512:
        return None, "custom_id must be a string of 1 to 512 characters"
    if custom_id in seen:
        return None, f'custom_id "{custom_id}" is used by an earlier line; each must be unique'
    if value["method"] != "POST":
        return None, 'method must be "POST"'
    if value["url"] not in ENDPOINTS:
        return None, f"url must be one of {', '.join(ENDPOINTS)}"
    body = value["body"]
    try:
        request = parse(ENDPOINTS[value["url"]], body)
    except ServiceError as error:
        return None, f"body: {error.message}"
    if getattr(request, "stream", False):
        return None, "body: stream cannot be true in a batch (results are written to a file)"
    if getattr(request, "n", 1) != 1:
        return None, "body: n must be 1 in a batch; send one line per choice"
    seen.add(custom_id)
    return value, ""


def batch_lines(text: str) -> list[dict[str, Any]]:
    """The requests of an input file (JSONL, blank lines skipped), each checked: a line of
    custom_id, method, url and body whose body its endpoint accepts, and custom_ids unique.
    Raises BatchFileInvalid naming every bad line."""
    requests, errors, seen = [], [], set[str]()
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        value, problem = _line_problem(number, raw, seen)
        if value is None:
            errors.append(LineError(number, problem))
            continue
        requests.append({**value, "line": number})
    if errors:
        raise BatchFileInvalid(errors)
    if not requests:
        raise BatchFileInvalid([LineError(1, "the file holds no requests")])
    if len(requests) > settings.BATCH_MAX_REQUESTS:
        raise BatchFileInvalid(
            [
                LineError(
                    requests[settings.BATCH_MAX_REQUESTS]["line"],
                    f"a batch holds at most {settings.BATCH_MAX_REQUESTS} requests",
                )
            ]
        )
    return requests


def batch_file_create(*, owner: User, filename: str, data: bytes) -> ApiFile:
    """An input file (purpose ``batch``), kept only when every line can run."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BatchFileInvalid([LineError(1, "the file is not UTF-8 text")]) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise BatchFileInvalid(
            [LineError(line, "it holds a NUL character, which text cannot hold")]
        )
    batch_lines(text)
    return ApiFile.objects.create(
        owner=owner,
        purpose=ApiFile.Purpose.BATCH,
        filename=filename or "batch.jsonl",
        content=text,
        bytes=len(data),
    )


def api_file_delete(*, api_file: ApiFile) -> None:
    """Delete a file; 409 while a batch that has not ended reads it."""
    if Batch.objects.filter(input_file=api_file, status__in=Batch.in_flight_states()).exists():
        raise ApiError(
            409,
            "A batch that has not ended reads this file; cancel it or wait for it to end.",
            code="file_in_use",
            param="file_id",
        )
    api_file.delete()


def _check(user: User, endpoint: str, body: dict[str, Any]) -> None:
    request = parse(ENDPOINTS[endpoint], body)
    if isinstance(request, EmbeddingRequest):
        embeddings_check(user=user, body=request)
    else:
        completion_check(user=user, body=request)


def batch_create(
    *,
    api_key: ApiKey,
    input_file_id: str,
    endpoint: str,
    completion_window: str,
    metadata: dict[str, str] | None,
) -> Batch:
    """``POST /v1/batches``: every request of the file checked for the key's account as its
    endpoint would check it (model, task, parameters), then the batch and its requests written
    in one transaction and its runner queued. Raises ApiError naming what to fix."""
    from .tasks import run_batch

    user = api_key.user
    if endpoint not in ENDPOINTS:
        raise ApiError(400, f"endpoint must be one of {', '.join(ENDPOINTS)}.", param="endpoint")
    if completion_window != "24h":
        raise ApiError(400, 'completion_window must be "24h".', param="completion_window")
    if metadata is not None and (
        not isinstance(metadata, dict)
        or len(metadata) > MAX_METADATA
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise ApiError(
            400, f"metadata must be up to {MAX_METADATA} string pairs.", param="metadata"
        )
    try:
        input_file = access_api_file(user, input_file_id)
    except Http404:
        raise ApiError(
            404,
            f"No batch file {quoted(input_file_id)} exists for this account.",
            param="input_file_id",
        ) from None
    if input_file.purpose != ApiFile.Purpose.BATCH:
        raise ApiError(400, "The input file must have purpose batch.", param="input_file_id")
    try:
        lines = batch_lines(input_file.content)
    except BatchFileInvalid as invalid:
        raise invalid.api_error("input_file_id") from None
    errors = []
    for line in lines:
        if line["url"] != endpoint:
            errors.append(LineError(line["line"], f"its url is {line['url']}, not {endpoint}"))
            continue
        try:
            _check(user, endpoint, line["body"])
        except ServiceError as error:
            errors.append(LineError(line["line"], error.message))
    if errors:
        raise BatchFileInvalid(errors).api_error("input_file_id")
    with transaction.atomic():
        batch = Batch.objects.create(
            user=user,
            api_key=api_key,
            endpoint=endpoint,
            input_file=input_file,
            completion_window=completion_window,
            metadata=metadata or {},
            expires_at=timezone.now() + timedelta(hours=24),
            total=len(lines),
        )
        BatchRequest.objects.bulk_create(
            BatchRequest(
                batch=batch, line=line["line"], custom_id=line["custom_id"], body=line["body"]
            )
            for line in lines
        )
        enqueue_on_commit(run_batch, batch.pk)
    return batch


def batch_cancel(*, batch: Batch) -> Batch:
    """``POST /v1/batches/{id}/cancel``: no more requests start; those running are stopped and
    what finished stays in the output file. A batch that has ended is left as it is."""
    now = timezone.now()
    with transaction.atomic():
        outcome = work_cancel(batch)
        if outcome:
            Batch.objects.filter(pk=batch.pk, cancelling_at__isnull=True).update(cancelling_at=now)
    if outcome == "cancelled":  # it had not started: no runner will write its files
        from .runner import batch_finalize

        batch_finalize(Batch.objects.get(pk=batch.pk))
    return Batch.objects.get(pk=batch.pk)


def batch_status(batch: Batch) -> str:
    """OpenAI's status of ``batch``."""
    if batch.status == Batch.Status.QUEUED:
        return "cancelling" if batch.cancel_requested else "validating"
    if batch.status == Batch.Status.RUNNING:
        if batch.cancel_requested or (batch.expired_at and not batch.finalizing_at):
            return "cancelling"
        return "finalizing" if batch.finalizing_at else "in_progress"
    if batch.status == Batch.Status.SUCCEEDED:
        return "completed"
    if batch.status == Batch.Status.FAILED:
        return "failed"
    return "expired" if batch.expired_at else "cancelled"


def _time(value: Any) -> int | None:
    return int(value.timestamp()) if value else None


def batch_object(batch: Batch) -> dict[str, Any]:
    status = batch.status
    ended = batch.finished_at
    body: dict[str, Any] = {
        "id": batch.openai_id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "errors": None,
        "input_file_id": f"file-{batch.input_file_id.hex}",
        "completion_window": batch.completion_window,
        "status": batch_status(batch),
        "output_file_id": f"file-{batch.output_file_id.hex}" if batch.output_file_id else None,
        "error_file_id": f"file-{batch.error_file_id.hex}" if batch.error_file_id else None,
        "created_at": _time(batch.created_at),
        "in_progress_at": _time(batch.started_at),
        "expires_at": _time(batch.expires_at),
        "finalizing_at": _time(batch.finalizing_at),
        "completed_at": _time(ended) if status == Batch.Status.SUCCEEDED else None,
        "failed_at": _time(ended) if status == Batch.Status.FAILED else None,
        "expired_at": _time(batch.expired_at),
        "cancelling_at": _time(batch.cancelling_at),
        "cancelled_at": _time(ended)
        if status == Batch.Status.CANCELLED and not batch.expired_at
        else None,
        "request_counts": {
            "total": batch.total,
            "completed": batch.completed,
            "failed": batch.failed,
        },
        "metadata": batch.metadata,
        "paused": batch.paused or None,  # this platform's: why no request starts now
    }
    if status == Batch.Status.FAILED:
        body["errors"] = {
            "object": "list",
            "data": [{"code": batch.error_code, "message": batch.error_message}],
        }
    return body


def file_object(api_file: ApiFile) -> dict[str, Any]:
    return {
        "id": api_file.openai_id,
        "object": "file",
        "bytes": api_file.bytes,
        "created_at": int(api_file.created_at.timestamp()),
        "filename": api_file.filename,
        "purpose": api_file.purpose,
        "status": "processed",
        "status_details": None,
    }
