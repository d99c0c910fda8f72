"""A training worker killed mid-job: the job ends failed with a reason, never stays "running", and
a redelivered task never starts a second trainer for it."""

from __future__ import annotations

import signal
import time

import pytest
from django.test import Client

from apps.accounts.models import ApiKey
from apps.accounts.services import api_key_issue
from apps.finetuning.models import FineTuningJob, JobEvent
from apps.finetuning.schemas import Hyperparameters
from apps.finetuning.services import dataset_create, finetune_job_create, finetune_job_run
from tests.conftest import celery_worker

from .conftest import DEMO

pytestmark = [pytest.mark.model, pytest.mark.django_db(transaction=True)]


def test_a_killed_worker_fails_its_job_with_a_reason(owner, chat_model, tmp_path, settings):
    worker = celery_worker("training", tmp_path, pool="solo", concurrency=1)
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
        deadline = time.monotonic() + 300
        while not job.events.filter(kind=JobEvent.Kind.STEP).exists():
            assert time.monotonic() < deadline, worker.output()[-3000:]
            time.sleep(0.3)
    finally:
        worker.stop(signal.SIGKILL)
    killed_at = time.monotonic()

    # Nothing else runs a reaper here: reading the job through the API notices the silence.
    key = api_key_issue(user=owner, name="t", scopes=[ApiKey.Scope.FINE_TUNING])[1]
    api = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    while True:
        body = api.get(f"/v1/fine_tuning/jobs/{job.openai_id}").json()
        if body["status"] != "running":
            break
        assert time.monotonic() - killed_at < 60, body
        time.sleep(1)
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
