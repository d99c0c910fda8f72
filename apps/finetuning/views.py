from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from apps.catalog.models import LanguageModel
from apps.catalog.selectors import access_model, active_version
from apps.core.errors import ServiceError
from apps.core.http import AuthedHttpRequest

from .datasets import DatasetInvalid
from .forms import DatasetUploadForm, JobForm
from .selectors import access_dataset, access_job, datasets_for, job_events, jobs_for
from .services import (
    dataset_create,
    dataset_delete,
    fine_tuned_model_delete,
    finetune_job_cancel,
    finetune_job_create,
    finetune_jobs_reap,
)
from .streaming import job_state

DEMO_DIR = Path(__file__).resolve().parent / "demo"
DEMO_FILES = {"train": "mascot-train.jsonl", "validation": "mascot-validation.jsonl"}


def _base_models(request: AuthedHttpRequest) -> list[LanguageModel]:
    return list(
        LanguageModel.objects.usable_by(request.user)
        .for_task(LanguageModel.Task.CHAT)
        .filter(owner__isnull=True)
    )


def _job_form(request: AuthedHttpRequest, data: object = None) -> JobForm:
    datasets = datasets_for(request.user)
    initial = {}
    if len(datasets) >= 2 and {d.filename for d in datasets[:2]} == set(DEMO_FILES.values()):
        by_name = {d.filename: d.pk for d in datasets[:2]}  # the demo, just added: preselect it
        initial = {
            "training_file": str(by_name[DEMO_FILES["train"]]),
            "validation_file": str(by_name[DEMO_FILES["validation"]]),
            "suffix": "mascot",
        }
    return JobForm(data, models=_base_models(request), datasets=datasets, initial=initial or None)


def _index(
    request: AuthedHttpRequest,
    *,
    upload: DatasetUploadForm | None = None,
    job_form: JobForm | None = None,
    upload_error: DatasetInvalid | None = None,
    status: int = 200,
) -> HttpResponse:
    finetune_jobs_reap()
    context = {
        "datasets": datasets_for(request.user),
        "jobs": jobs_for(request.user),
        "upload_form": upload or DatasetUploadForm(),
        "job_form": job_form or _job_form(request),
        "upload_error": upload_error,
    }
    return render(request, "finetuning/index.html", context, status=status)


@login_required
@require_GET
def finetuning_index(request: AuthedHttpRequest) -> HttpResponse:
    return _index(request)


@login_required
@require_POST
def dataset_upload(request: AuthedHttpRequest) -> HttpResponse:
    form = DatasetUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return _index(request, upload=form, status=400)
    upload = form.cleaned_data["file"]
    try:
        dataset = dataset_create(
            owner=request.user, filename=upload.name, data=_read_upload(upload)
        )
    except DatasetInvalid as invalid:
        return _index(request, upload=form, upload_error=invalid, status=400)
    return redirect("finetuning-dataset", dataset_id=dataset.pk)


def _read_upload(upload: UploadedFile) -> bytes:
    """The upload's bytes; a file over the limit is refused before it is read."""
    size = getattr(upload, "size", 0)
    if size > settings.FINETUNE_MAX_UPLOAD_BYTES:
        raise DatasetInvalid(
            f"The file has {size} bytes; the limit is {settings.FINETUNE_MAX_UPLOAD_BYTES}."
        )
    return upload.read()


@login_required
@require_POST
def dataset_demo(request: AuthedHttpRequest) -> HttpResponse:
    """Add the demo dataset (training and validation files) to the user's datasets."""
    with transaction.atomic():
        for name in (DEMO_FILES["validation"], DEMO_FILES["train"]):
            dataset_create(owner=request.user, filename=name, data=(DEMO_DIR / name).read_bytes())
    return redirect("finetuning-index")


@require_GET
def demo_file(request: AuthedHttpRequest, name: str) -> FileResponse:
    if name not in DEMO_FILES.values():
        raise Http404("No such demo file")
    return FileResponse(
        open(DEMO_DIR / name, "rb"), content_type="application/jsonl", filename=name
    )


@login_required
@require_GET
def dataset_detail(request: AuthedHttpRequest, dataset_id: str) -> HttpResponse:
    dataset = access_dataset(request.user, dataset_id)
    template = "finetuning/dataset.html#analysis" if request.htmx else "finetuning/dataset.html"
    return render(request, template, {"dataset": dataset})


@login_required
@require_POST
def dataset_delete_view(request: AuthedHttpRequest, dataset_id: str) -> HttpResponse:
    dataset = access_dataset(request.user, dataset_id)
    try:
        dataset_delete(dataset=dataset)
    except ServiceError as exc:
        return render(
            request,
            "finetuning/dataset.html",
            {"dataset": dataset, "error": exc.message},
            status=409,
        )
    return redirect("finetuning-index")


@login_required
@require_POST
def model_delete_view(request: AuthedHttpRequest, job_id: str) -> HttpResponse:
    """Delete the model a job deployed (the job page's button)."""
    job = access_job(request.user, job_id)
    if job.result_version is None or not job.result_version.model.is_enabled:
        raise Http404("This job has no model to delete")
    fine_tuned_model_delete(model=job.result_version.model)
    return redirect("finetuning-job", job_id=job.pk)


@login_required
@require_POST
def job_create(request: AuthedHttpRequest) -> HttpResponse:
    form = _job_form(request, request.POST)
    if not form.is_valid():
        return _index(request, job_form=form, status=400)
    data = form.cleaned_data
    try:
        model = access_model(request.user, data["model"], task=LanguageModel.Task.CHAT)
        job = finetune_job_create(
            owner=request.user,
            base_version=active_version(model),
            training_file=access_dataset(request.user, data["training_file"]),
            validation_file=(
                access_dataset(request.user, data["validation_file"])
                if data.get("validation_file")
                else None
            ),
            method=data["method"],
            hyperparameters=data["hyperparameters"],
            suffix=data.get("suffix") or "",
        )
    except ServiceError as exc:
        form.add_error(exc.param if exc.param in form.fields else None, exc.message)
        return _index(request, job_form=form, status=400)
    return redirect("finetuning-job", job_id=job.pk)


@login_required
@require_GET
def job_detail(request: AuthedHttpRequest, job_id: str) -> HttpResponse:
    finetune_jobs_reap()
    job = access_job(request.user, job_id)
    events = job_events(job)
    context = {
        "job": job,
        "state": job_state(job),
        "events": [e.as_json() for e in events],
        "log": events[-30:][::-1],
        "evaluation": job.evaluation,
    }
    return render(request, "finetuning/job.html", context)


@login_required
@require_POST
def job_cancel(request: AuthedHttpRequest, job_id: str) -> HttpResponse:
    finetune_job_cancel(job=access_job(request.user, job_id))
    return redirect("finetuning-job", job_id=job_id)
