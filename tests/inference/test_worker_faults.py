"""Faults in the inference tier with real `celery worker` processes: a worker killed mid-answer
while another is alive (it finishes the answer from the stored tokens), a worker killed with none
left (the answer waits, and says so, until one comes), and a worker stopped for a deploy."""

from __future__ import annotations

import asyncio
import json
import signal

import httpx
import pytest
import websockets
from asgiref.sync import sync_to_async
from django.db import transaction

from apps.core.models import Worker
from apps.inference.models import Generation
from apps.inference.protocol import SamplingParams
from apps.inference.services import generation_start
from playground.celery import app
from tests.chat.conftest import session_cookie
from tests.conftest import celery_worker
from tests.factories import ConversationFactory
from tests.helpers import wait_for

pytestmark = [pytest.mark.django_db(transaction=True)]

COUNT = "Count from 1 to 500, separated by commas."
MAX_TOKENS = 400


def start_answer(owner, chat_model, max_tokens: int, content: str = COUNT) -> Generation:
    with transaction.atomic():
        [generation] = generation_start(
            user=owner,
            version=chat_model.active_version,
            params=SamplingParams(temperature=0, max_tokens=max_tokens),
            messages=[{"role": "user", "content": content}],
        )
    return generation


def streaming(generation_id: object, worker: str) -> Generation | None:
    row = Generation.objects.get(pk=generation_id)
    assert row.status in ("queued", "running"), (row.status, row.error_message, row.output)
    return row if row.worker == worker and len(row.output) >= 10 else None


async def chat_answer(socket) -> str:
    """The text the chat socket's deltas add up to, once its answer is done."""
    text = ""
    while (event := json.loads(await asyncio.wait_for(socket.recv(), 180)))["type"] != "done":
        if event["type"] == "delta":
            assert event["offset"] == len(text)
            text += event["text"]
    return text


async def sse_answer(response) -> tuple[str, str]:
    """The text of an SSE chat completion, and its last data line."""
    text, last = "", ""
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            last = line.removeprefix("data: ")
            if last != "[DONE]":
                for choice in json.loads(last)["choices"]:
                    text += choice["delta"].get("content") or ""
    return text, last


@pytest.mark.model
def test_a_worker_killed_mid_answer_is_taken_over_and_the_answers_end_exactly(
    live_server_url, owner, chat_model, api_key, tmp_path
):
    victim = celery_worker("inference", tmp_path, name="victim@tests")
    rescuer = celery_worker("inference", tmp_path, name="rescuer@tests")
    try:
        # The rescuer stands aside until the victim holds both answers.
        app.control.cancel_consumer("inference", destination=["rescuer@tests"], reply=True)
        chat = ConversationFactory(owner=owner, temperature=0, max_tokens=MAX_TOKENS)
        ws_headers = {"Cookie": session_cookie(owner).decode(), "Origin": live_server_url}
        ws_url = f"{live_server_url.replace('http', 'ws')}/ws/chat/{chat.pk}/"
        body = {
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": COUNT}],
            "temperature": 0,
            "max_tokens": MAX_TOKENS,
            "stream": True,
        }

        async def scenario() -> tuple[str, str, str]:
            headers = {"Authorization": f"Bearer {api_key}"}
            async with (
                httpx.AsyncClient(base_url=live_server_url, headers=headers, timeout=300) as api,
                websockets.connect(ws_url, additional_headers=ws_headers) as socket,
                api.stream("POST", "/v1/chat/completions", json=body) as response,
            ):
                assert response.status_code == 200
                sse = asyncio.create_task(sse_answer(response))
                await socket.send(json.dumps({"action": "send", "text": COUNT}))
                ids = await sync_to_async(wait_for)(
                    lambda: (
                        [g.pk for g in Generation.objects.all()]
                        if Generation.objects.count() == 2
                        else None
                    ),
                    what="both answers",
                )
                for pk in ids:
                    await sync_to_async(wait_for)(
                        lambda pk=pk: streaming(pk, "victim@tests"), timeout=120, what="streaming"
                    )
                app.control.add_consumer("inference", destination=["rescuer@tests"], reply=True)
                victim.stop(signal.SIGKILL)
                chat_text = await chat_answer(socket)
                sse_text, last = await asyncio.wait_for(sse, 180)
                return chat_text, sse_text, last

        chat_text, sse_text, last = asyncio.run(scenario())
        assert last == "[DONE]"
        chat_row = chat.messages.get(role="assistant").generation
        sse_row = Generation.objects.get(api_key__isnull=False)
        for row, received in ((chat_row, chat_text), (sse_row, sse_text)):
            assert row.status == "succeeded", (row.error_code, row.error_message)
            assert received == row.output  # one complete answer: nothing repeated or missing
            assert row.attempts == 2
            assert [a["worker"] for a in row.attempt_log] == ["victim@tests", "rescuer@tests"]
            assert row.attempt_log[0]["ended"] == "worker_lost"
            assert row.completion_tokens == len(row.output_ids) > 100
        assert Worker.objects.get(hostname="victim@tests").state == "lost"

        # Greedy, continued from the stored tokens: the same answer as an uninterrupted run.
        reference = start_answer(owner, chat_model, MAX_TOKENS)
        done = wait_for(
            lambda: (g := Generation.objects.get(pk=reference.pk)).is_finished and g, timeout=180
        )
        assert (done.status, done.attempts) == ("succeeded", 1)
        assert chat_row.output == sse_row.output == done.output
    finally:
        victim.stop(signal.SIGKILL)
        rescuer.stop()


def test_with_no_worker_left_an_answer_waits_says_so_and_ends_with_the_next_worker(
    live_server_url, api_key, tmp_path
):
    fake = {"INFERENCE_ENGINE": "fake"}
    victim = celery_worker("inference", tmp_path, name="victim@tests", **fake)
    # A training worker serves no answers, but its heartbeat takes back those of lost workers.
    reaper = celery_worker("training", tmp_path, name="reaper@tests", pool="solo", **fake)
    newcomer = None
    words = " ".join(f"w{i}" for i in range(400))  # 400 steps of 20 ms
    body = {
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": words}],
        "max_tokens": 1000,
        "stream": True,
    }
    try:
        with httpx.stream(
            "POST",
            f"{live_server_url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=120,
        ) as response:
            lines = response.iter_lines()
            text = ""
            for line in lines:
                if line.startswith("data: ") and len(text) < 30:
                    text += json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                if len(text) >= 30:
                    break
            victim.stop(signal.SIGKILL)
            for line in lines:
                if line == ": waiting for a worker to continue this answer":
                    break
                if line.startswith("data: "):
                    text += json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
            row = wait_for(
                lambda: (g := Generation.objects.get()).status == "queued" and g,
                what="the answer to be taken back",
            )
            assert (row.attempts, row.worker) == (1, "")
            newcomer = celery_worker("inference", tmp_path, name="newcomer@tests", **fake)
            for line in lines:
                if line.startswith("data: ") and line != "data: [DONE]":
                    for choice in json.loads(line[6:])["choices"]:
                        text += choice["delta"].get("content") or ""
        row.refresh_from_db()
        assert (row.status, row.attempts) == ("succeeded", 2)
        assert text == row.output == "Echo: " + words
        assert [a["worker"] for a in row.attempt_log] == ["victim@tests", "newcomer@tests"]
    finally:
        for worker in (victim, reaper, newcomer):
            if worker is not None:
                worker.stop(signal.SIGKILL)


@pytest.mark.model
def test_a_worker_stopped_for_a_deploy_finishes_what_it_runs(owner, chat_model, tmp_path):
    worker = celery_worker("inference", tmp_path, name="deploy@tests")
    try:
        generation = start_answer(owner, chat_model, max_tokens=64)
        wait_for(lambda: streaming(generation.pk, "deploy@tests"), timeout=120, what="streaming")
        worker.stop(signal.SIGTERM, timeout=60)  # Celery's warm shutdown
        assert worker.proc.returncode == 0
        done = Generation.objects.get(pk=generation.pk)
        assert done.status == "succeeded" and done.finish_reason in ("stop", "length")
        assert done.completion_tokens > 10
        assert Worker.objects.get(hostname="deploy@tests").state == "stopped"
    finally:
        worker.stop(signal.SIGKILL)


def test_a_worker_killed_mid_batch_leaves_a_batch_that_completes_each_request_once(
    owner, chat_model, tmp_path
):
    """The batch runner and its requests are work records: killed with the worker that held
    them, they are taken up by the next worker where the rows stand (the fake engine, so that
    only the recovery is under test; the real model runs batches in test_openai_client.py)."""
    from apps.accounts.services import api_key_issue
    from apps.api.batches import batch_create, batch_file_create
    from apps.api.models import Batch, BatchRequest

    key = api_key_issue(user=owner, name="batch", scopes=["inference"])[0]
    words = " ".join(["word"] * 30)
    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": chat_model.slug,
                "messages": [{"role": "user", "content": f"{i} {words}"}],
                "max_tokens": 40,
            },
        }
        for i in range(16)
    ]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    fake = {"INFERENCE_ENGINE": "fake", "BATCH_CONCURRENCY": "2"}
    victim = celery_worker("inference", tmp_path, name="victim@tests", **fake)
    rescuer = None
    try:
        upload = batch_file_create(owner=owner, filename="in.jsonl", data=data)
        batch = batch_create(
            api_key=key,
            input_file_id=upload.openai_id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata=None,
        )
        wait_for(
            lambda: (
                Batch.objects.get(pk=batch.pk).completed >= 3
                and Generation.objects.filter(status="running").exists()
            ),
            timeout=60,
            what="the batch under way",
        )
        victim.stop(signal.SIGKILL)
        rescuer = celery_worker("inference", tmp_path, name="rescuer@tests", **fake)
        done = wait_for(
            lambda: (b := Batch.objects.get(pk=batch.pk)).is_finished and b,
            timeout=120,
            what="the batch to end",
        )
        assert done.status == "succeeded", (done.error_code, done.error_message)
        assert [a["worker"] for a in done.attempt_log] == ["victim@tests", "rescuer@tests"]
        rows = [json.loads(x) for x in done.output_file.content.splitlines()]
        assert sorted(r["custom_id"] for r in rows) == sorted(f"r{i}" for i in range(16))
        for row in rows:
            i = row["custom_id"][1:]
            text = row["response"]["body"]["choices"][0]["message"]["content"]
            assert text == f"Echo: {i} {words}"  # resumed answers end exactly
        # One generation per request: none ran twice; the interrupted ones were continued.
        assert Generation.objects.count() == 16
        assert BatchRequest.objects.filter(generation__isnull=True).count() == 0
        assert Generation.objects.filter(attempts=2).exists()
        assert done.error_file is None
    finally:
        victim.stop()
        if rescuer is not None:
            rescuer.stop()
