"""A job's lifecycle beside its run: the sweeps every worker's heartbeat runs (work a broker lost
sent again, jobs of lost workers and jobs over their time limit failed), and reads that write
nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from apps.accounts.models import ApiKey
from apps.core.models import Worker
from apps.finetuning.models import Dataset, FineTuningJob, JobEvent
from apps.finetuning.runner import finetune_jobs_reap, finetune_requeue_stranded
from tests.factories import ApiKeyFactory, WorkerFactory

pytestmark = pytest.mark.django_db


def test_stranded_work_is_sent_again_once_per_interval(
    job, dataset, monkeypatch, settings, django_capture_on_commit_callbacks
):
    from apps.finetuning import tasks

    sent = []
    monkeypatch.setattr(tasks.run_finetune_job, "delay", lambda pk: sent.append(("job", pk)))
    monkeypatch.setattr(tasks.analyze_dataset, "delay", lambda pk: sent.append(("data", pk)))
    settings.REQUEUE_SECONDS = 60
    assert finetune_requeue_stranded() == 0  # just sent: not stranded yet
    an_hour_ago = timezone.now() - timedelta(hours=1)
    FineTuningJob.objects.filter(pk=job.pk).update(sent_at=an_hour_ago)
    Dataset.objects.filter(pk=dataset.pk).update(sent_at=an_hour_ago)
    with django_capture_on_commit_callbacks(execute=True):
        assert finetune_requeue_stranded() == 2
    assert sorted(sent) == [("data", str(dataset.pk)), ("job", str(job.pk))]
    assert finetune_requeue_stranded() == 0  # sent again just now


def test_the_reaper_fails_the_jobs_of_lost_workers_only(job, settings):
    now = timezone.now()
    worker = WorkerFactory(hostname="w@h", started_at=now - timedelta(minutes=2))
    FineTuningJob.objects.filter(pk=job.pk).update(
        status="running", worker="w@h", attempts=1, started_at=now
    )
    assert finetune_jobs_reap() == 0  # its worker beats
    Worker.objects.filter(pk=worker.pk).update(
        last_seen=now - timedelta(seconds=settings.WORKER_LOST_SECONDS + 1)
    )
    assert finetune_jobs_reap() == 1
    job.refresh_from_db()
    assert (job.status, job.error_code) == ("failed", "worker_lost")
    assert "The worker w@h stopped responding (lost)" in job.error_message
    assert job.events.last().level == JobEvent.Level.ERROR
    assert finetune_jobs_reap() == 0


def test_a_job_working_past_its_time_limit_is_failed_by_any_worker(job, settings):
    FineTuningJob.objects.filter(pk=job.pk).update(
        status="running", worker="", attempts=1, started_at=timezone.now() - timedelta(hours=5)
    )
    settings.FINETUNE_MAX_SECONDS = 4 * 3600.0
    assert finetune_jobs_reap() == 1
    job.refresh_from_db()
    assert (job.status, job.error_code) == ("failed", "timeout")
    assert job.error_message == "The job ran over its time limit of 14400 s."


def test_reading_a_job_writes_nothing(client, owner, job):
    long_ago = timezone.now() - timedelta(hours=1)
    WorkerFactory(hostname="gone@h", started_at=long_ago, last_seen=long_ago)
    FineTuningJob.objects.filter(pk=job.pk).update(
        status="running", worker="gone@h", attempts=1, started_at=long_ago
    )
    before = list(FineTuningJob.objects.values())
    client.force_login(owner)
    page = client.get(f"/finetuning/jobs/{job.pk}/").content.decode()
    assert "The worker running this job (gone@h) has stopped answering." in page
    assert client.get("/finetuning/").status_code == 200
    key = ApiKeyFactory(user=owner, scopes=[ApiKey.Scope.FINE_TUNING]).key
    api = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert api.get(f"/v1/fine_tuning/jobs/{job.openai_id}").json()["status"] == "running"
    assert api.get("/v1/fine_tuning/jobs").status_code == 200
    assert list(FineTuningJob.objects.values()) == before
