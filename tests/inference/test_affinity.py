"""A conversation's next turn goes to the worker that holds its cells: the key its turns share, and
two real `celery worker` processes on the llama.cpp engine, one of them then stopped."""

from __future__ import annotations

import signal
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from apps.core.models import Worker
from apps.inference.affinity import PREFIX_CHARS, conversation_key, worker_for
from apps.inference.models import Generation
from apps.inference.protocol import SamplingParams
from apps.inference.services import generation_start
from tests.conftest import celery_worker
from tests.factories import GenerationFactory, WorkerFactory
from tests.helpers import wait_for

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def test_the_turns_of_one_conversation_share_a_key_and_others_do_not(chat_model):
    version = chat_model.active_version
    first = [SYSTEM, {"role": "user", "content": "Tell me about cats."}]
    later = [
        *first,
        {"role": "assistant", "content": "Cats are small."},
        {"role": "user", "content": "And dogs?"},
    ]
    other = [SYSTEM, {"role": "user", "content": "Tell me about dogs."}]
    key = conversation_key(version, messages=first)
    assert key == conversation_key(version, messages=later)
    assert key != conversation_key(version, messages=other)
    assert conversation_key(version, messages=[first[1]]) != key  # the system prompt counts

    long = "x" * PREFIX_CHARS
    assert conversation_key(version, messages=None, prompt=long) == conversation_key(
        version, messages=None, prompt=long + " and more"
    )
    assert conversation_key(version, messages=None, prompt="short") == ""


def test_a_key_steers_only_to_a_live_inference_worker(chat_model, owner):
    key = conversation_key(chat_model.active_version, messages=[SYSTEM])
    assert worker_for(key) == "" and worker_for("") == ""
    WorkerFactory(hostname="a@tests", queues=["inference"])
    GenerationFactory(
        user=owner, model_version=chat_model.active_version, affinity_key=key, worker="a@tests"
    )
    assert worker_for(key) == "a@tests"
    Worker.objects.filter(hostname="a@tests").update(queues=["training"])
    assert worker_for(key) == ""
    Worker.objects.filter(hostname="a@tests").update(
        queues=["inference"], last_seen=timezone.now() - timedelta(minutes=5)
    )
    assert worker_for(key) == ""


def answer(owner, chat_model, messages) -> Generation:
    with transaction.atomic():
        [generation] = generation_start(
            user=owner,
            version=chat_model.active_version,
            params=SamplingParams(temperature=0, max_tokens=12),
            messages=messages,
        )
    return wait_for(
        lambda: (g := Generation.objects.get(pk=generation.pk)).is_finished and g,
        timeout=180,
        what="the answer",
    )


@pytest.mark.model
@pytest.mark.django_db(transaction=True)
def test_the_next_turns_go_to_the_worker_that_holds_the_conversation_and_elsewhere_once_it_stops(
    owner, chat_model, tmp_path
):
    workers = {
        name: celery_worker("inference", tmp_path, name=name) for name in ("a@tests", "b@tests")
    }
    try:
        messages = [{"role": "user", "content": "Name three colours. " * 20}]
        first = answer(owner, chat_model, messages)
        assert first.status == "succeeded", first.error_message
        holder = first.worker
        for turn in range(3):
            messages = [
                *messages,
                {"role": "assistant", "content": first.output},
                {"role": "user", "content": f"And {turn + 2} more?"},
            ]
            first = answer(owner, chat_model, messages)
            # Each turn lands on the holder (by chance: 1 in 8 for all three) and reuses its cells.
            assert (first.status, first.worker) == ("succeeded", holder)
            assert first.cached_tokens > 100

        workers.pop(holder).stop(signal.SIGTERM, timeout=60)
        [(other, _)] = workers.items()
        messages = [
            *messages,
            {"role": "assistant", "content": first.output},
            {"role": "user", "content": "Thanks."},
        ]
        after = answer(owner, chat_model, messages)
        assert (after.status, after.worker, after.cached_tokens) == ("succeeded", other, 0)
    finally:
        for worker in workers.values():
            worker.stop(signal.SIGKILL)
