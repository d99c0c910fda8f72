"""The web side of fine-tuning: datasets (stored once every row is checked), jobs (queued,
cancelled), the log of each job, and deleting what a user made. The training worker's side is
``runner.py``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import ProtectedError, Q
from django.utils.translation import gettext as _

from apps.accounts.models import User
from apps.catalog.models import LanguageModel, ModelVersion
from apps.core.errors import ErrorCode, ServiceError
from apps.core.queues import enqueue_on_commit
from apps.core.work import work_cancel
from apps.evals.models import EvalSet

from .datasets import CLASSIFICATION, parse_dataset
from .models import Dataset, FineTuningJob, JobEvent
from .schemas import Hyperparameters
from .streaming import publish_event

Status = FineTuningJob.Status


# -- datasets ------------------------------------------------------------------------------------
def dataset_create(*, owner: User, filename: str, data: bytes) -> Dataset:
    """Validate and store an uploaded JSONL file; raise DatasetInvalid (nothing stored) when any
    row is bad. A worker counts its tokens and renders a preview once the transaction commits."""
    from .tasks import analyze_dataset

    parsed = parse_dataset(data)
    with transaction.atomic():
        dataset = Dataset(
            owner=owner,
            filename=Path(filename).name[:255] or "dataset.jsonl",
            format=parsed.format,
            bytes=len(data),
            rows=len(parsed.rows),
            label_counts=parsed.label_counts if parsed.format == CLASSIFICATION else {},
        )
        extension = "csv" if parsed.is_csv else "jsonl"
        dataset.file.save(f"upload.{extension}", ContentFile(data), save=False)
        try:
            dataset.save()
        except Exception:
            dataset.file.delete(save=False)
            raise
        enqueue_on_commit(analyze_dataset, dataset.pk)
    return dataset


# -- jobs ----------------------------------------------------------------------------------------
def finetune_job_create(
    *,
    owner: User,
    base_version: ModelVersion,
    training_file: Dataset,
    validation_file: Dataset | None = None,
    method: str | None = None,
    hyperparameters: Hyperparameters,
    suffix: str = "",
    eval_set: EvalSet | None = None,
) -> FineTuningJob:
    """Queue a job on the training queue: a chat fine-tune on a chat model, a classifier on an
    embeddings model (``method`` defaults to the kind's first). Preconditions: the model version
    came from ``access_model`` for ``owner``, the datasets from ``access_dataset``; raises
    ServiceError for a base that cannot be fine-tuned, a method or file that does not suit it, or
    a bad suffix."""
    from .tasks import run_finetune_job

    kind = FineTuningJob.Kind(_job_kind(base_version))
    methods = FineTuningJob.METHODS[kind]
    method = method or methods[0]
    if method not in methods:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            _("method must be %(methods)s for a %(kind)s job on %(model)s")
            % {"methods": " or ".join(methods), "kind": kind, "model": base_version.model.slug},
            param="method",
        )
    if validation_file is not None and validation_file.pk == training_file.pk:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            _(
                "The validation file is the training file: its loss would say nothing. Pick "
                "another file, or none to hold out part of the training rows."
            ),
            param="validation_file",
        )
    formats = _FORMATS[kind]
    for param, dataset in (("training_file", training_file), ("validation_file", validation_file)):
        if dataset is not None and dataset.format not in formats:
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER,
                _(
                    "%(name)s holds %(shape)s rows; a %(kind)s job on %(model)s needs %(shapes)s rows."
                )
                % {
                    "name": dataset.filename,
                    "shape": str(dataset.get_format_display()).lower(),
                    "kind": kind,
                    "model": base_version.model.slug,
                    "shapes": " or ".join(str(Dataset.Format(f).label).lower() for f in formats),
                },
                param=param,
            )
    if suffix and not all(c.isascii() and (c.isalnum() or c == "-") for c in suffix):
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            _("suffix may hold only letters, digits and '-'"),
            param="suffix",
        )
    if len(suffix) > 32:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER, _("suffix must be at most 32 characters"), param="suffix"
        )
    if eval_set is not None and kind != FineTuningJob.Kind.CHAT:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            _("An eval set measures chat models; a classifier is measured on its test split."),
            param="eval_set",
        )
    with transaction.atomic():
        job = FineTuningJob.objects.create(
            owner=owner,
            kind=kind,
            base_version=base_version,
            training_file=training_file,
            validation_file=validation_file,
            method=method,
            hyperparameters=hyperparameters.model_dump(mode="json"),
            suffix=suffix.lower(),
            eval_set=eval_set,
        )
        job_event_add(job, JobEvent.Kind.STATUS, "Queued: waiting for a training worker")
        enqueue_on_commit(run_finetune_job, job.pk)
    return job


_FORMATS = {
    FineTuningJob.Kind.CHAT: (Dataset.Format.CHAT, Dataset.Format.PROMPT_COMPLETION),
    FineTuningJob.Kind.CLASSIFICATION: (Dataset.Format.CLASSIFICATION,),
}


def _job_kind(base_version: ModelVersion) -> str:
    """A chat model is fine-tuned; a sentence encoder (embeddings) becomes a classifier."""
    task = base_version.model.task
    if base_version.base_version_id is None and base_version.model.owner_id is None:
        if task == LanguageModel.Task.CHAT:
            return FineTuningJob.Kind.CHAT
        if task == LanguageModel.Task.EMBEDDINGS:
            return FineTuningJob.Kind.CLASSIFICATION
    raise ServiceError(
        ErrorCode.INVALID_PARAMETER,
        _(
            "%(model)s cannot be fine-tuned; pick a registered chat model, or an embeddings "
            "model to train a classifier."
        )
        % {"model": base_version.model.slug},
        param="model",
    )


def finetune_job_cancel(*, job: FineTuningJob) -> bool:
    """Stop ``job``, keeping its log. False if it had already finished. A queued job is cancelled
    at once; a working one by its worker, within one training step."""
    outcome = work_cancel(job)
    if not outcome:
        return False
    job.refresh_from_db()
    if outcome == "cancelled":
        job_event_add(job, JobEvent.Kind.STATUS, "Cancelled before it started")
    else:
        job_event_add(job, JobEvent.Kind.MESSAGE, "Cancel requested: stopping after this step")
    return True


def job_event_add(
    job: FineTuningJob,
    kind: str,
    message: str,
    data: dict[str, Any] | None = None,
    *,
    level: str = JobEvent.Level.INFO,
) -> JobEvent:
    """Add a line to ``job``'s log and publish it once the transaction commits."""
    event = JobEvent.objects.create(
        job=job, kind=kind, message=message, data=data or {}, level=level
    )
    transaction.on_commit(lambda: publish_event(job, event))
    return event


def fine_tuned_slug(job: FineTuningJob) -> str:
    return f"ft:{job.base_version.model.slug}:{job.suffix or 'custom'}:{job.id.hex[:8]}"


# -- deleting ------------------------------------------------------------------------------------
def dataset_delete(*, dataset: Dataset) -> None:
    """Delete a dataset and its file. Refused (ServiceError naming the job) while a job uses it:
    the job's record points at its data. Precondition: ``access_dataset``."""
    used_by = FineTuningJob.objects.filter(
        Q(training_file=dataset) | Q(validation_file=dataset)
    ).first()
    if used_by is not None:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            _("The file is used by the fine-tuning job %(job)s; it is kept as that job's record.")
            % {"job": used_by.openai_id},
            param="file_id",
        )
    name, storage = str(dataset.file.name), dataset.file.storage
    try:
        with transaction.atomic():
            dataset.delete()
            transaction.on_commit(lambda: storage.delete(name))
    except ProtectedError:  # a job took it meanwhile
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            _("The file is now used by a fine-tuning job; it is kept as that job's record."),
            param="file_id",
        ) from None


def fine_tuned_model_delete(*, model: LanguageModel) -> None:
    """Retire one of the user's fine-tuned models: it leaves the picker and /v1/models at once and
    its trained weights are deleted. The rows stay, disabled, as the record of the answers it gave.
    Precondition: ``model`` came from ``access_model`` and ``model.owner`` is the caller."""
    if model.owner_id is None:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER, _("Only fine-tuned models can be deleted."), param="model"
        )
    # Only what the platform trained is removed from disk, never a folder an admin registered.
    folders = [
        Path(v.source)
        for v in model.versions.all()
        if Path(v.source).is_relative_to(settings.FINETUNE_OUTPUT_DIR)
    ]

    def remove() -> None:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)

    with transaction.atomic():
        LanguageModel.objects.filter(pk=model.pk).update(is_enabled=False)
        transaction.on_commit(remove)
