"""A training worker killed mid-job: another worker's heartbeat ends the job failed with a reason
(it never stays "running"), and a redelivered task never starts a second trainer for it."""

from __future__ import annotations

import signal

import pytest
from django.test import Client

from apps.accounts.models import ApiKey
from apps.finetuning.models import FineTuningJob, JobEvent
from apps.finetuning.runner import finetune_job_run
from apps.finetuning.schemas import Hyperparameters
from apps.finetuning.services import dataset_create, finetune_job_create
from tests.conftest import celery_worker
from tests.factories import ApiKeyFactory
from tests.helpers import wait_for

from .conftest import DEMO

pytestmark = [pytest.mark.model, pytest.mark.django_db(transaction=True)]


def test_a_killed_worker_fails_its_job_with_a_reason(owner, chat_model, tmp_path, settings):
    worker = celery_worker("training", tmp_path, pool="solo", concurrency=1)
    # Any live worker notices the silence; this one serves inference with the quick fake engine.
    survivor = celery_worker("inference", tmp_path, name="survivor@tests", INFERENCE_ENGINE="fake")
    try:
        dataset = dataset_create(
            owner=owner,
            filename="train.jsonl",
            data=(DEMO / "mascot-train.jsonl").read_bytes(),
        )
        job = finetune_job_create(
            owner=owner,
            base_version=chat_model.active_version,
            training_file=dataset,
            hyperparameters=Hyperparameters(n_epochs=50, batch_size=2),
        )
        wait_for(
            lambda: job.events.filter(kind=JobEvent.Kind.STEP).exists(),
            timeout=300,
            what="the first training step",
        )
        worker.stop(signal.SIGKILL)
        key = ApiKeyFactory(user=owner, scopes=[ApiKey.Scope.FINE_TUNING]).key
        api = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
        body = wait_for(
            lambda: (
                (b := api.get(f"/v1/fine_tuning/jobs/{job.openai_id}").json())["status"]
                != "running"
                and b
            ),
            timeout=60,
            what="the survivor to fail the job",
        )
    finally:
        worker.stop(signal.SIGKILL)
        survivor.stop()
    assert body["status"] == "failed"
    assert body["error"]["code"] == "worker_lost"
    assert "stopped responding" in body["error"]["message"]
    job.refresh_from_db()
    assert job.events.filter(kind=JobEvent.Kind.STEP).count() == job.step >= 1
    assert job.events.last().level == JobEvent.Level.ERROR

    # The broker redelivers an unacknowledged task eventually: it must leave the job alone.
    finetune_job_run(job_id=str(job.pk), worker="another@host")
    job.refresh_from_db()
    assert (job.status, job.attempts) == (FineTuningJob.Status.FAILED, 1)
