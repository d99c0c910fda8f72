"""Files and fine-tuning jobs in OpenAI's shape: ``/v1/files`` and ``/v1/fine_tuning/jobs``.

Every endpoint needs a key with the ``fine-tuning`` scope; an id of another account's file or
job answers 404, as a missing one does.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.http import Http404, HttpRequest, JsonResponse

from apps.accounts.models import ApiKey
from apps.core.errors import ServiceError
from apps.core.uploads import too_large
from apps.finetuning.datasets import DatasetInvalid
from apps.finetuning.models import Dataset, FineTuningJob, JobEvent
from apps.finetuning.selectors import access_dataset, access_job, datasets_for, jobs_for
from apps.finetuning.services import dataset_create, dataset_delete, finetune_job_cancel

from .decorators import api_view, json_body, list_limit
from .errors import ApiError
from .schemas import FineTuningJobRequest, parse
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
@api_view("POST", scope=SCOPE)
async def files_create(request: HttpRequest, api_key: ApiKey) -> JsonResponse:
    def create() -> Dataset:
        purpose = request.POST.get("purpose")
        if purpose != "fine-tune":
            raise ApiError(400, "purpose must be 'fine-tune'.", param="purpose")
        upload = request.FILES.get("file")
        if not isinstance(upload, UploadedFile):
            raise ApiError(400, "Send the dataset as the multipart field 'file'.", param="file")
        refusal = too_large(upload, settings.FINETUNE_MAX_UPLOAD_BYTES)
        if refusal:
            raise ApiError(413, refusal, code="file_too_large", param="file")
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

    return JsonResponse(file_object(await sync_to_async(create)()), status=200)


@api_view("GET", scope=SCOPE)
async def files_list(request: HttpRequest, api_key: ApiKey) -> JsonResponse:
    datasets = await sync_to_async(datasets_for)(api_key.user)
    return JsonResponse({"object": "list", "data": [file_object(d) for d in datasets]})


@api_view("GET", scope=SCOPE)
async def file_detail(request: HttpRequest, api_key: ApiKey, file_id: str) -> JsonResponse:
    try:
        dataset = await sync_to_async(access_dataset)(api_key.user, file_id)
    except Http404:
        raise not_found("file", file_id) from None
    return JsonResponse(file_object(dataset))


@api_view("DELETE", scope=SCOPE)
async def file_delete(request: HttpRequest, api_key: ApiKey, file_id: str) -> JsonResponse:
    def delete() -> str:
        try:
            dataset = access_dataset(api_key.user, file_id)
        except Http404:
            raise not_found("file", file_id) from None
        openai_id = dataset.openai_id
        try:
            dataset_delete(dataset=dataset)
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
