"""The embedded default, started as a user starts it: `make run`, no DATABASE_URL or REDIS_URL."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time

import httpx
import openai
import pytest
import websockets
from django.conf import settings

from tests.helpers import ROOT, Process, child_env, free_port


def csrf(html: str) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)


@pytest.mark.model
def test_make_run_serves_a_streamed_chat(tmp_path):
    port = free_port()
    env = child_env(
        PLAYGROUND_VAR_DIR=str(tmp_path / "var"), MODEL_CACHE_DIR=str(settings.MODEL_CACHE_DIR)
    )
    env.pop("DATABASE_URL")
    env.pop("REDIS_URL")
    server = Process(["make", "run", f"PORT={port}"], env=env, log=tmp_path / "server.log")
    base = f"http://127.0.0.1:{port}"
    try:
        server.wait_for_http(f"{base}/accounts/login/", timeout=180)
        assert (
            "Embedded inference and training workers started (in-memory broker)." in server.output()
        )
        assert (tmp_path / "var" / "playground.sqlite3").exists()
        # The embedded worker beats like a separate one, so the service reports itself ready.
        ready = httpx.get(f"{base}/readyz", timeout=10)
        for _ in range(50):
            if ready.status_code == 200:
                break
            time.sleep(0.2)
            ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text

        with httpx.Client(base_url=base, follow_redirects=True, timeout=30) as client:
            page = client.get("/accounts/signup/")
            page = client.post(
                "/accounts/signup/",
                data={
                    "csrfmiddlewaretoken": csrf(page.text),
                    "username": "alice",
                    "password1": "a-long-passphrase-42",
                    "password2": "a-long-passphrase-42",
                },
            )
            assert page.url.path == "/chat/"
            page = client.post("/chat/new/", data={"csrfmiddlewaretoken": csrf(page.text)})
            conversation = page.url.path.split("/")[2]
            saved = client.post(
                f"/chat/{conversation}/settings/",
                headers={"X-CSRFToken": csrf(page.text)},
                data={
                    "model": "smollm2-135m-instruct",
                    "system_prompt": "",
                    "temperature": "0",
                    "top_p": "1",
                    "max_tokens": "24",
                },
            )
            assert saved.status_code == 200
            cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())

        async def chat() -> tuple[str, str]:
            async with websockets.connect(
                f"ws://127.0.0.1:{port}/ws/chat/{conversation}/",
                additional_headers={"Cookie": cookie, "Origin": base},
            ) as ws:
                await ws.send(json.dumps({"action": "send", "text": "Name the capital of France."}))
                text = ""
                while True:
                    event = json.loads(await asyncio.wait_for(ws.recv(), 180))
                    if event["type"] == "delta":
                        text = text[: event["offset"]] + event["text"]
                    elif event["type"] == "done":
                        return text, event["html"]

        text, html = asyncio.run(chat())
        assert "Paris" in text
        # From start to the first answer the log holds no traceback (the heartbeat thread once
        # logged one, reading torch while another thread was importing it).
        assert "Traceback" not in server.output(), server.output()[-6000:]
        assert text.strip().split()[0] in html and "tok/s" in html
        # Reloading the page shows the stored answer.
        with httpx.Client(
            base_url=base, timeout=30, cookies=dict(c.split("=", 1) for c in cookie.split("; "))
        ) as client:
            assert "Paris" in client.get(f"/chat/{conversation}/").text

        # A program with a key from createapikey, through the official client.
        created = subprocess.run(
            [
                *(str(ROOT / ".venv/bin/python"), "manage.py", "createapikey", "alice"),
                *("--scope", "inference", "--scope", "fine-tuning"),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        api = openai.OpenAI(
            base_url=f"{base}/v1",
            api_key=created.stdout.strip().splitlines()[-1],
            max_retries=0,
            timeout=120,
        )
        stream = api.chat.completions.create(
            model="smollm2-135m-instruct",
            temperature=0,
            max_tokens=16,
            stream=True,
            messages=[{"role": "user", "content": "Name the capital of France."}],
        )
        assert "Paris" in "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        vectors = api.embeddings.create(model="all-minilm-l6-v2", input=["hello", "world"])
        assert [len(d.embedding) for d in vectors.data] == [384, 384]

        # The Responses API's chain and a small Batch API batch, on the embedded worker.
        first = api.responses.create(
            model="smollm2-135m-instruct", input="Name the capital of France.", temperature=0
        )
        second = api.responses.create(
            model="smollm2-135m-instruct",
            input="And of Italy?",
            previous_response_id=first.id,
            temperature=0,
            max_output_tokens=16,
        )
        assert second.usage.input_tokens > first.usage.input_tokens and second.output_text
        lines = "\n".join(
            json.dumps(
                {
                    "custom_id": f"q{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": "smollm2-135m-instruct",
                        "messages": [{"role": "user", "content": f"Say {i}."}],
                        "max_tokens": 8,
                    },
                }
            )
            for i in range(3)
        )
        upload = api.files.create(file=("b.jsonl", lines.encode()), purpose="batch")
        batch = api.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        deadline = time.monotonic() + 120
        while (batch := api.batches.retrieve(batch.id)).status != "completed":
            assert batch.status in ("validating", "in_progress", "finalizing"), batch
            assert time.monotonic() < deadline, batch
            time.sleep(1)
        output = api.files.content(batch.output_file_id).text.splitlines()
        assert sorted(json.loads(x)["custom_id"] for x in output) == ["q0", "q1", "q2"]

        # A (one-step) fine-tuning job on the embedded training worker, then its model answers.
        rows = [
            {
                "messages": [
                    {"role": "user", "content": f"Code {i}?"},
                    {"role": "assistant", "content": f"Code {i} is ZEBRA."},
                ]
            }
            for i in range(6)
        ]
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()
        upload = api.files.create(file=("codes.jsonl", data), purpose="fine-tune")
        job = api.fine_tuning.jobs.create(
            model="smollm2-135m-instruct",
            training_file=upload.id,
            hyperparameters={"n_epochs": 1, "learning_rate": 0.003},
            suffix="codes",
        )
        deadline = time.monotonic() + 300
        while job.status not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, job
            time.sleep(1)
            job = api.fine_tuning.jobs.retrieve(job.id)
        assert job.status == "succeeded", job.error
        answer = api.chat.completions.create(
            model=job.fine_tuned_model,
            temperature=0,
            max_tokens=8,
            messages=[{"role": "user", "content": "Code 9?"}],
        )
        assert answer.choices[0].message.content
    finally:
        server.stop()
