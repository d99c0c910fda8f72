"""The worker's entry point (the Celery task, run in-process here) and its failure paths."""

from __future__ import annotations

import pytest

from apps.inference.models import Generation
from apps.inference.protocol import SamplingParams
from apps.inference.tasks import run_generation
from tests.factories import GenerationFactory, ModelVersionFactory, WorkerFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fake_engine")]


def make(owner, version, text="hello world", **fields):
    return GenerationFactory(
        user=owner,
        model_version=version,
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


def test_one_taken_back_from_a_lost_worker_continues_from_its_stored_tokens(owner, version):
    # A first run wrote "Echo: hello" (the fake engine's tokens 0 and 1), then its worker was
    # lost and the reaper put it back in the queue.
    generation = make(
        owner, version, output="Echo: hello", output_ids=[0, 1], attempts=1, ttft_ms=40
    )
    run_generation.apply(args=[str(generation.pk)])
    generation.refresh_from_db()
    assert (generation.status, generation.output, generation.output_ids) == (
        "succeeded",
        "Echo: hello world",
        [0, 1, 2],
    )
    assert (generation.attempts, generation.completion_tokens, generation.ttft_ms) == (2, 3, 40)


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
    small = ModelVersionFactory(model=chat_model, context_length=10)
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
    broken = ModelVersionFactory(model=chat_model, source=str(tmp_path / "nowhere"))
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


def test_the_reaper_takes_back_only_the_answers_of_gone_workers_and_the_run_cannot_undo_it(
    owner, version, settings, monkeypatch, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    from apps.inference import runner, tasks

    sent = []
    monkeypatch.setattr(tasks.run_generation, "delay", sent.append)

    now = timezone.now()
    old = now - timedelta(minutes=5)
    for hostname, started_at, last_seen in (
        ("gone@x", old, old),
        ("alive@x", old, now),
        ("restarted@x", now, now),
    ):
        WorkerFactory(hostname=hostname, started_at=started_at, last_seen=last_seen)
    rows = {
        name: make(
            owner,
            version,
            status="running",
            attempts=1,
            worker=name,
            started_at=old,
            output="partial",
            attempt_log=[{"worker": name, "started_at": old.isoformat()}],
        )
        for name in ("gone@x", "alive@x", "restarted@x", "")
    }
    with django_capture_on_commit_callbacks(execute=True):
        assert runner.generations_reap() == 2
    states = {name: Generation.objects.get(pk=row.pk).status for name, row in rows.items()}
    assert states == {
        "gone@x": "queued",
        "alive@x": "running",
        "restarted@x": "queued",
        "": "running",
    }
    assert sorted(sent) == sorted(str(rows[name].pk) for name in ("gone@x", "restarted@x"))
    requeued = Generation.objects.get(pk=rows["gone@x"].pk)
    assert (requeued.output, requeued.worker, requeued.attempts) == ("partial", "", 1)
    assert requeued.attempt_log[-1]["ended"] == "worker_lost"

    # The run that was still going (a worker taken for dead) can neither write nor finish it.
    live = rows["gone@x"]
    stream = runner._GenerationStream(live, engine=None)
    stream.pending_text = " more"
    assert stream.flush() is True
    live.completion_tokens = 5
    runner._finish(live, Generation.Status.SUCCEEDED, finish_reason="stop")
    requeued.refresh_from_db()
    assert (requeued.status, requeued.output, requeued.completion_tokens) == (
        "queued",
        "partial",
        0,
    )

    # One whose worker keeps dying fails once it has used up its claims.
    Generation.objects.filter(pk=live.pk).update(
        status="running", worker="gone@x", attempts=settings.WORK_MAX_ATTEMPTS
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert runner.generations_reap() == 1
    failed = Generation.objects.get(pk=live.pk)
    assert (failed.status, failed.error_code, failed.retryable) == ("failed", "worker_lost", True)
    assert failed.output == "partial"


def test_a_broker_that_refuses_the_message_loses_nothing_and_the_sweep_sends_it_again(
    owner, version, monkeypatch, settings, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.db import transaction
    from django.utils import timezone
    from kombu.exceptions import OperationalError

    from apps.inference import tasks
    from apps.inference.runner import inference_requeue_stranded
    from apps.inference.services import generation_start

    def broker_down(pk):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(tasks.run_generation, "delay", broker_down)
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        [generation] = generation_start(
            user=owner, version=version, params=SamplingParams(), messages=[]
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
