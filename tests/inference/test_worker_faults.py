"""Faults in the inference tier with real `celery worker` processes and the packaged model: a
worker killed mid-answer, and a worker stopped for a deploy."""

from __future__ import annotations

import signal

import pytest
from django.db import transaction

from apps.core.errors import ErrorCode
from apps.inference.models import Generation, Worker
from apps.inference.protocol import SamplingParams
from apps.inference.services import generation_create, generation_run
from tests.conftest import celery_worker
from tests.helpers import wait_for

pytestmark = [pytest.mark.model, pytest.mark.django_db(transaction=True)]

LONG = [{"role": "user", "content": "Count from 1 to 500, separated by commas."}]


def start_answer(owner, chat_model, max_tokens: int) -> Generation:
    with transaction.atomic():
        return generation_create(
            user=owner,
            model_version=chat_model.active_version,
            params=SamplingParams(temperature=0, max_tokens=max_tokens),
            messages=LONG,
        )


def streaming(generation: Generation) -> Generation | None:
    row = Generation.objects.get(pk=generation.pk)
    assert row.status in ("queued", "running"), (row.status, row.error_message, row.output)
    return row if row.status == "running" and len(row.output) >= 10 else None


def test_a_worker_killed_mid_answer_leaves_it_failed_with_the_text_so_far(
    owner, chat_model, tmp_path
):
    victim = celery_worker("inference", tmp_path, name="victim@tests")
    survivor = celery_worker("training", tmp_path, name="survivor@tests", pool="solo")
    try:
        generation = start_answer(owner, chat_model, max_tokens=600)
        running = wait_for(lambda: streaming(generation), timeout=120, what="the answer to stream")
        assert running.worker == "victim@tests"  # type: ignore[union-attr]
        victim.stop(signal.SIGKILL)
        seen = Generation.objects.get(pk=generation.pk).output

        # Another worker notices the silence after WORKER_LOST_SECONDS (10 s here: a worker busy
        # loading a model can miss a few half-second beats without being taken for dead).
        failed = wait_for(
            lambda: (g := Generation.objects.get(pk=generation.pk)).status == "failed" and g,
            timeout=40,
            what="the answer to be failed",
        )
        assert failed.error_code == ErrorCode.WORKER_LOST  # type: ignore[union-attr]
        assert "stopped before it finished" in failed.error_message  # type: ignore[union-attr]
        assert failed.output == seen and seen  # type: ignore[union-attr]
        assert Worker.objects.get(hostname="victim@tests").state == "lost"

        # The broker hands the unacknowledged task out again later: it must not run twice.
        generation_run(generation_id=str(generation.pk), worker="another@tests")
        again = Generation.objects.get(pk=generation.pk)
        assert (again.status, again.output, again.attempts) == ("failed", seen, 1)
    finally:
        victim.stop(signal.SIGKILL)
        survivor.stop()


def test_a_worker_stopped_for_a_deploy_finishes_what_it_runs(owner, chat_model, tmp_path):
    worker = celery_worker("inference", tmp_path, name="deploy@tests")
    try:
        generation = start_answer(owner, chat_model, max_tokens=64)
        wait_for(lambda: streaming(generation), timeout=120, what="the answer to stream")
        worker.stop(signal.SIGTERM, timeout=60)  # Celery's warm shutdown
        assert worker.proc.returncode == 0
        done = Generation.objects.get(pk=generation.pk)
        assert done.status == "succeeded" and done.finish_reason in ("stop", "length")
        assert done.completion_tokens > 10
        assert Worker.objects.get(hostname="deploy@tests").state == "stopped"
    finally:
        worker.stop(signal.SIGKILL)
