from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext
from django.views.decorators.http import require_GET, require_POST

from apps.catalog.models import LanguageModel
from apps.catalog.selectors import (
    DEFAULT_CHAT_MODEL,
    DEFAULT_CLASSIFIER_BASE,
    access_model,
    active_version,
)
from apps.core.errors import ServiceError
from apps.core.http import AuthedHttpRequest
from apps.core.uploads import too_large
from apps.core.work import worker_gone
from apps.evals.comparisons import compare
from apps.evals.selectors import access_eval_set, eval_sets_for, run_results

from .datasets import DatasetInvalid
from .forms import DatasetUploadForm, JobForm
from .models import FineTuningJob, JobEvent
from .selectors import access_dataset, access_job, datasets_for, job_events, jobs_for
from .services import (
    dataset_create,
    dataset_delete,
    fine_tuned_model_delete,
    finetune_job_cancel,
    finetune_job_create,
)
from .streaming import job_state

DEMO_DIR = Path(__file__).resolve().parent / "demo"
DEMO_FILES = {"train": "mascot-train.jsonl", "validation": "mascot-validation.jsonl"}
CLASSIFICATION_DEMO = "support-intents.csv"


def _base_models(request: AuthedHttpRequest) -> list[LanguageModel]:
    """Chat models to fine-tune, and encoders (embeddings models) to train classifiers on."""
    return list(
        LanguageModel.objects.usable_by(request.user)
        .filter(task__in=[LanguageModel.Task.CHAT, LanguageModel.Task.EMBEDDINGS])
        .filter(owner__isnull=True)
    )


def _job_form(request: AuthedHttpRequest, data: object = None) -> JobForm:
    datasets = datasets_for(request.user)
    initial: dict[str, object] = {"model": DEFAULT_CHAT_MODEL}
    if datasets and datasets[0].filename == CLASSIFICATION_DEMO:  # just added: preselect it
        initial = {
            "model": DEFAULT_CLASSIFIER_BASE,
            "training_file": str(datasets[0].pk),
            "method": FineTuningJob.Method.FULL,
            "suffix": "intents",
        }
    elif len(datasets) >= 2 and {d.filename for d in datasets[:2]} == set(DEMO_FILES.values()):
        by_name = {d.filename: d.pk for d in datasets[:2]}  # the demo, just added: preselect it
        initial = {
            "model": DEFAULT_CHAT_MODEL,
            "training_file": str(by_name[DEMO_FILES["train"]]),
            "validation_file": str(by_name[DEMO_FILES["validation"]]),
            "suffix": "mascot",
        }
    return JobForm(
        data,
        models=_base_models(request),
        datasets=datasets,
        eval_sets=eval_sets_for(request.user),
        initial=initial,
    )


def _index(
    request: AuthedHttpRequest,
    *,
    upload: DatasetUploadForm | None = None,
    job_form: JobForm | None = None,
    upload_error: DatasetInvalid | None = None,
    status: int = 200,
) -> HttpResponse:
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
    refusal = too_large(upload, settings.FINETUNE_MAX_UPLOAD_BYTES)
    if refusal:
        raise DatasetInvalid(refusal)
    return upload.read()


@login_required
@require_POST
def dataset_demo(request: AuthedHttpRequest) -> HttpResponse:
    """Add the demo dataset (training and validation files) to the user's datasets."""
    with transaction.atomic():
        for name in (DEMO_FILES["validation"], DEMO_FILES["train"]):
            dataset_create(owner=request.user, filename=name, data=(DEMO_DIR / name).read_bytes())
    return redirect("finetuning-index")


@login_required
@require_POST
def dataset_demo_classification(request: AuthedHttpRequest) -> HttpResponse:
    """Add the labelled demo (support requests by intent) to the user's datasets."""
    dataset_create(
        owner=request.user,
        filename=CLASSIFICATION_DEMO,
        data=(DEMO_DIR / CLASSIFICATION_DEMO).read_bytes(),
    )
    return redirect("finetuning-index")


@require_GET
def demo_file(request: AuthedHttpRequest, name: str) -> FileResponse:
    if name not in [*DEMO_FILES.values(), CLASSIFICATION_DEMO]:
        raise Http404("No such demo file")
    kind = "text/csv" if name.endswith(".csv") else "application/jsonl"
    return FileResponse(open(DEMO_DIR / name, "rb"), content_type=kind, filename=name)


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
        model = access_model(request.user, data["model"])
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
            eval_set=(
                access_eval_set(request.user, data["eval_set"]) if data.get("eval_set") else None
            ),
        )
    except ServiceError as exc:
        form.add_error(exc.param if exc.param in form.fields else None, exc.message)
        return _index(request, job_form=form, status=400)
    return redirect("finetuning-job", job_id=job.pk)


@login_required
@require_GET
def job_detail(request: AuthedHttpRequest, job_id: str) -> HttpResponse:
    job = access_job(request.user, job_id)
    events = job_events(job)
    context: dict[str, object] = {
        "job": job,
        "state": job_state(job),
        "events": [e.as_json() for e in _thinned(events)],
        "log": events[-30:][::-1],
        "evaluation": job.evaluation,
        "worker_gone": worker_gone(job),
    }
    if job.kind == FineTuningJob.Kind.CLASSIFICATION and job.evaluation:
        context["classification"] = _classification_tables(job.evaluation)
    base_run, result_run = job.eval_base_run, job.eval_result_run
    if base_run is not None and result_run is not None:
        context["eval_runs"] = (base_run, result_run)
        if base_run.is_finished and result_run.is_finished:
            context["eval_comparison"] = compare(
                base_run, result_run, run_results(base_run), run_results(result_run)
            )
    return render(request, "finetuning/job.html", context)


CHART_POINTS = 2000


def _thinned(events: list[JobEvent]) -> list[JobEvent]:
    """The events the chart draws, with training steps thinned to about CHART_POINTS (every
    evaluation and the last step kept), so a long job's page stays light."""
    steps = [e for e in events if e.kind == JobEvent.Kind.STEP]
    every = max(1, -(-len(steps) // CHART_POINTS))
    if every == 1:
        return events
    keep = {e.pk for e in steps[::every]} | {steps[-1].pk}
    return [e for e in events if e.kind != JobEvent.Kind.STEP or e.pk in keep]


def _classification_tables(evaluation: dict[str, Any]) -> dict[str, object]:
    """The job page's tables: metrics beside the baselines, per label, and the confusion matrix."""
    labels = evaluation["labels"]
    baselines = evaluation["baselines"]
    columns = [(gettext("Fine-tuned"), evaluation["test"])]
    if baselines["tfidf_logreg"]:
        columns.append((gettext("TF-IDF + logistic regression"), baselines["tfidf_logreg"]))
    majority = gettext("Majority class (%(label)s)") % {"label": baselines["majority"]["label"]}
    columns.append((majority, baselines["majority"]))
    rows = [
        (name, [metrics[key] for _, metrics in columns])
        for key, name in (
            ("accuracy", gettext("Accuracy")),
            ("macro_precision", gettext("Macro precision")),
            ("macro_recall", gettext("Macro recall")),
            ("macro_f1", gettext("Macro F1")),
        )
    ]
    confusion = evaluation["test"]["confusion"]
    largest = max((n for row in confusion for n in row), default=0) or 1
    return {
        "columns": [name for name, _ in columns],
        "rows": rows,
        "per_label": [(label, evaluation["test"]["per_label"][label]) for label in labels],
        "labels": labels,
        "confusion": [
            (label, [(n, round(n / largest, 2)) for n in row])
            for label, row in zip(labels, confusion, strict=True)
        ],
        "mistakes": [p for p in evaluation["predictions"] if p["label"] != p["predicted"]],
    }


@login_required
@require_POST
def job_cancel(request: AuthedHttpRequest, job_id: str) -> HttpResponse:
    finetune_job_cancel(job=access_job(request.user, job_id))
    return redirect("finetuning-job", job_id=job_id)
