"""Files and fine-tuning jobs in OpenAI's shape: ``/v1/files`` and ``/v1/fine_tuning/jobs``.

A fine-tuning dataset and every jobs endpoint need a key with the ``fine-tuning`` scope, a
Batch API file (purpose ``batch``, and a batch's output) one with the ``inference`` scope; an id
of another account's file or job answers 404, as a missing one does.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse

from apps.accounts.models import ApiKey
from apps.core.errors import ServiceError
from apps.core.uploads import too_large
from apps.finetuning.datasets import DatasetInvalid
from apps.finetuning.models import Dataset, FineTuningJob, JobEvent
from apps.finetuning.selectors import access_dataset, access_job, datasets_for, jobs_for
from apps.finetuning.services import dataset_create, dataset_delete, finetune_job_cancel

from .batches import BatchFileInvalid, api_file_delete, batch_file_create
from .batches import file_object as batch_file_object
from .decorators import MAX_LIST, api_view, json_body, list_limit, list_page
from .errors import ApiError
from .models import ApiFile
from .schemas import FineTuningJobRequest, parse
from .selectors import access_api_file, api_files_for
from .services import fine_tuning_job_start, not_found

SCOPE = ApiKey.Scope.FINE_TUNING


def file_object(dataset: Dataset) -> dict[str, Any]:
    return {
        "id": dataset.openai_id,
        "object": "file",
        "bytes": dataset.bytes,
        "created_at": int(dataset.created_at.timestamp()),
        "filename": dataset.filename,
        "purpose": "fine-tune",
        "status": "processed",
        "rows": dataset.rows,
        "format": dataset.format,
        "tokens": dataset.tokens,
    }


def job_object(job: FineTuningJob) -> dict[str, Any]:
    hp = job.hyperparameters
    error = (
        {"code": job.error_code, "message": job.error_message, "param": None}
        if job.status == FineTuningJob.Status.FAILED
        else None
    )
    eta = job.eta_seconds
    return {
        "id": job.openai_id,
        "object": "fine_tuning.job",
        "created_at": int(job.created_at.timestamp()),
        "finished_at": int(job.finished_at.timestamp()) if job.finished_at else None,
        "model": job.base_version.model.slug,
        "fine_tuned_model": job.fine_tuned_model,
        "organization_id": f"user-{job.owner_id}",
        "status": job.status,
        "hyperparameters": hp,
        "method": {"type": job.method},
        "training_file": job.training_file.openai_id,
        "validation_file": job.validation_file.openai_id if job.validation_file else None,
        "result_files": [],
        "trained_tokens": job.trained_tokens if job.is_finished else None,
        "error": error,
        "seed": hp.get("seed"),
        "suffix": job.suffix or None,
        "estimated_finish": (
            int(job.progress_at.timestamp()) + eta if eta is not None and job.progress_at else None
        ),
        "step": job.step,
        "total_steps": job.total_steps,
        "evaluation": job.evaluation,
    }


def event_object(event: JobEvent) -> dict[str, Any]:
    return {
        "id": f"ftevent-{event.pk}",
        "object": "fine_tuning.job.event",
        "created_at": int(event.created_at.timestamp()),
        "level": event.level,
        "message": event.message,
        "data": event.data,
        "type": "metrics" if event.kind in (JobEvent.Kind.STEP, JobEvent.Kind.EVAL) else "message",
    }


# -- files ---------------------------------------------------------------------------------------
def _needs(api_key: ApiKey, scope: str) -> None:
    if not api_key.allows(scope):
        raise ApiError(
            403,
            f"This API key does not have the {ApiKey.Scope(scope).value} scope; create a key "
            "with it on the API keys page.",
            code="insufficient_scope",
        )


def _either_file(api_key: ApiKey, file_id: str) -> ApiFile | Dataset:
    """The account's batch file or dataset ``file_id``, each needing its key scope; 404 when the
    account has neither by that id."""
    user = api_key.user
    try:
        api_file = access_api_file(user, file_id)
    except Http404:
        pass
    else:
        _needs(api_key, ApiKey.Scope.INFERENCE)
        return api_file
    try:
        dataset = access_dataset(user, file_id)
    except Http404:
        raise not_found("file", file_id) from None
    _needs(api_key, SCOPE)
    return dataset


def _any_file_object(found: ApiFile | Dataset) -> dict[str, Any]:
    return batch_file_object(found) if isinstance(found, ApiFile) else file_object(found)


@api_view("POST", scope=None)
async def files_create(request: HttpRequest, api_key: ApiKey) -> JsonResponse:
    """A fine-tuning dataset (purpose ``fine-tune``, the fine-tuning scope) or a Batch API input
    file (purpose ``batch``, the inference scope); every line checked before it is kept."""

    def create() -> Dataset | ApiFile:
        purpose = request.POST.get("purpose")
        if purpose not in ("fine-tune", "batch"):
            raise ApiError(400, "purpose must be 'fine-tune' or 'batch'.", param="purpose")
        _needs(api_key, SCOPE if purpose == "fine-tune" else ApiKey.Scope.INFERENCE)
        upload = request.FILES.get("file")
        if not isinstance(upload, UploadedFile):
            raise ApiError(400, "Send the file as the multipart field 'file'.", param="file")
        limit = (
            settings.FINETUNE_MAX_UPLOAD_BYTES
            if purpose == "fine-tune"
            else settings.BATCH_MAX_UPLOAD_BYTES
        )
        refusal = too_large(upload, limit)
        if refusal:
            raise ApiError(413, refusal, code="file_too_large", param="file")
        if purpose == "batch":
            try:
                return batch_file_create(
                    owner=api_key.user, filename=upload.name or "", data=upload.read()
                )
            except BatchFileInvalid as invalid:
                raise invalid.api_error("file") from None
        try:
            return dataset_create(
                owner=api_key.user, filename=upload.name or "", data=upload.read()
            )
        except DatasetInvalid as invalid:
            raise ApiError(
                400,
                str(invalid),
                code="invalid_file",
                param="file",
                details=[{"line": e.line, "message": e.message} for e in invalid.errors],
            ) from None

    return JsonResponse(_any_file_object(await sync_to_async(create)()), status=200)


@api_view("GET", scope=None)
async def files_list(request: HttpRequest, api_key: ApiKey) -> JsonResponse:
    """The account's files its key may use (datasets with the fine-tuning scope, Batch API
    files with the inference scope), newest first; ``purpose`` narrows them."""
    purpose = request.GET.get("purpose")
    limit = list_limit(request, default=MAX_LIST)
    after = request.GET.get("after")

    def listed() -> dict[str, Any]:
        found: list[Any] = []
        if api_key.allows(SCOPE) and purpose in (None, "fine-tune"):
            found += datasets_for(api_key.user)
        if api_key.allows(ApiKey.Scope.INFERENCE) and purpose != "fine-tune":
            found += [f for f in api_files_for(api_key.user) if purpose in (None, f.purpose)]
        found.sort(key=lambda f: f.created_at, reverse=True)
        return list_page(
            found,
            id_of=lambda f: f.openai_id,
            shape=_any_file_object,
            after=after,
            limit=limit,
            what="file",
        )

    return JsonResponse(await sync_to_async(listed)())


@api_view("GET", scope=None)
async def file_detail(request: HttpRequest, api_key: ApiKey, file_id: str) -> JsonResponse:
    found = await sync_to_async(_either_file)(api_key, file_id)
    return JsonResponse(_any_file_object(found))


@api_view("GET", scope=None)
async def file_content(request: HttpRequest, api_key: ApiKey, file_id: str) -> HttpResponse:
    """A Batch API file's text (an input, or a batch's output or error file)."""

    def content() -> ApiFile:
        found = _either_file(api_key, file_id)
        if not isinstance(found, ApiFile):
            raise ApiError(
                400,
                "The content of a fine-tuning dataset is not served back; only Batch API files "
                "(inputs, outputs and errors) are.",
                param="file_id",
            )
        return found

    found = await sync_to_async(content)()
    return HttpResponse(found.content, content_type="application/jsonl; charset=utf-8")


@api_view("DELETE", scope=None)
async def file_delete(request: HttpRequest, api_key: ApiKey, file_id: str) -> JsonResponse:
    def delete() -> str:
        found = _either_file(api_key, file_id)
        openai_id = found.openai_id
        if isinstance(found, ApiFile):
            api_file_delete(api_file=found)
            return openai_id
        try:
            dataset_delete(dataset=found)
        except ServiceError as error:
            raise ApiError(409, error.message, code="file_in_use", param="file_id") from None
        return openai_id

    deleted = await sync_to_async(delete)()
    return JsonResponse({"id": deleted, "object": "file", "deleted": True})


# -- jobs ----------------------------------------------------------------------------------------
@api_view("POST", scope=SCOPE)
async def jobs_create(request: HttpRequest, api_key: ApiKey) -> JsonResponse:
    body = parse(FineTuningJobRequest, json_body(request))
    job = await sync_to_async(fine_tuning_job_start)(api_key=api_key, body=body)
    return JsonResponse(job_object(job))


@api_view("GET", scope=SCOPE)
async def jobs_list(request: HttpRequest, api_key: ApiKey) -> JsonResponse:
    limit = list_limit(request)
    after = request.GET.get("after")

    def page() -> tuple[list[FineTuningJob], bool]:
        jobs = jobs_for(api_key.user)
        if after:
            ids = [j.openai_id for j in jobs]
            jobs = jobs[ids.index(after) + 1 :] if after in ids else []
        return jobs[:limit], len(jobs) > limit

    jobs, more = await sync_to_async(page)()
    return JsonResponse({"object": "list", "data": [job_object(j) for j in jobs], "has_more": more})


async def _job(api_key: ApiKey, job_id: str) -> FineTuningJob:
    def load() -> FineTuningJob:
        return access_job(api_key.user, job_id)

    try:
        return await sync_to_async(load)()
    except Http404:
        raise not_found("fine-tuning job", job_id) from None


@api_view("GET", scope=SCOPE)
async def job_detail(request: HttpRequest, api_key: ApiKey, job_id: str) -> JsonResponse:
    return JsonResponse(job_object(await _job(api_key, job_id)))


@api_view("GET", scope=SCOPE)
async def job_events_list(request: HttpRequest, api_key: ApiKey, job_id: str) -> JsonResponse:
    """Newest first, as OpenAI lists them; ``after`` is an event id to page back from."""
    job = await _job(api_key, job_id)
    limit = list_limit(request)
    after = request.GET.get("after", "")

    def page() -> list[JobEvent]:
        events = job.events.order_by("-id")
        if after:
            number = after.removeprefix("ftevent-")
            if not number.isdigit():
                raise ApiError(400, "after must be an event id like 'ftevent-12'.", param="after")
            events = events.filter(id__lt=int(number))
        return list(events[: limit + 1])

    events = await sync_to_async(page)()
    return JsonResponse(
        {
            "object": "list",
            "data": [event_object(e) for e in events[:limit]],
            "has_more": len(events) > limit,
        }
    )


@api_view("POST", scope=SCOPE)
async def job_cancel(request: HttpRequest, api_key: ApiKey, job_id: str) -> JsonResponse:
    job = await _job(api_key, job_id)

    def cancel() -> FineTuningJob:
        if not finetune_job_cancel(job=job):
            raise ApiError(
                409,
                f"The job has already ended ({job.status}); there is nothing to cancel.",
                code="job_finished",
            )
        return access_job(api_key.user, job_id)

    return JsonResponse(job_object(await sync_to_async(cancel)()))
