from __future__ import annotations

import uuid

from django.http import Http404

from apps.accounts.models import User

from .models import Dataset, FineTuningJob, JobEvent


def _uuid(value: object, prefix: str) -> uuid.UUID | None:
    text = str(value)
    if text.startswith(prefix):
        text = text[len(prefix) :]
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def access_dataset(user: User, dataset_id: object) -> Dataset:
    """The dataset ``dataset_id`` (a UUID or ``file-<hex>``) if ``user`` owns it; 404 otherwise."""
    key = _uuid(dataset_id, "file-")
    dataset = (
        Dataset.objects.filter(pk=key, owner_id=user.pk).first()
        if key and user.is_authenticated
        else None
    )
    if dataset is None:
        raise Http404("No such file")
    return dataset


def access_job(user: User, job_id: object) -> FineTuningJob:
    """The job ``job_id`` (a UUID or ``ftjob-<hex>``) if ``user`` owns it; 404 otherwise."""
    key = _uuid(job_id, "ftjob-")
    job = (
        FineTuningJob.objects.select_related(
            "base_version__model", "result_version__model", "training_file", "validation_file"
        )
        .filter(pk=key, owner_id=user.pk)
        .first()
        if key and user.is_authenticated
        else None
    )
    if job is None:
        raise Http404("No such fine-tuning job")
    return job


def datasets_for(user: User) -> list[Dataset]:
    return list(Dataset.objects.filter(owner=user))


def jobs_for(user: User) -> list[FineTuningJob]:
    return list(
        FineTuningJob.objects.filter(owner=user).select_related(
            "base_version__model", "result_version__model", "training_file"
        )
    )


def job_events(job: FineTuningJob, *, after: int = 0, limit: int | None = None) -> list[JobEvent]:
    """Events of ``job`` with ids above ``after``, oldest first. Precondition: ``access_job``."""
    events = job.events.filter(id__gt=after)
    return list(events[:limit] if limit else events)
