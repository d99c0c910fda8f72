"""``make loadtest``: a bounded load test of the production shape on this machine.

50 simulated users chat over the WebSocket (each its own account and conversation) and 20 API
clients stream chat completions (each its own key), for 60 seconds: each sends, reads the answer
to its end, and sends again. Then the run waits for the answers in flight, and checks the record:
every request the platform accepted has exactly one generation, finished and metered once, and
every chat answer exactly one message. Errors other than deliberate 429s fail the run.

The whole load runs once per engine (ENGINES, default ``llamacpp,transformers``: the worker's
INFERENCE_ENGINE), each with accounts of its own, so the engines are compared in one run.

Uses the bench database (``playground_bench``) and Redis database 14, like ``make bench``;
writes bench/results/load.json and prints a summary. USERS, CLIENTS, SECONDS, TOKENS and ENGINES
(environment) change the shape.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import (  # noqa: E402  (sets the bench database and Redis in the environment)
    LOGS,
    PYTHON,
    WEB_PORT,
    WORKER,
    ensure_database,
    log,
    start,
    stop,
    wait_http,
)

USERS = int(os.environ.get("USERS", "50"))
CLIENTS = int(os.environ.get("CLIENTS", "20"))
SECONDS = float(os.environ.get("SECONDS", "60"))
TOKENS = int(os.environ.get("TOKENS", "64"))
ENGINES = os.environ.get("ENGINES", "llamacpp,transformers").split(",")
PROMPTS = [
    "Tell me a short fact about the sea.",
    "Name three colours and a thing of each colour.",
    "Say hello to a new colleague in two sentences.",
    "Describe a cup of tea in a few words.",
]


def setup() -> dict[str, Any]:
    """USERS accounts with a session and a conversation each; CLIENTS accounts with a key each."""
    import django

    django.setup()
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command

    from apps.accounts.models import ApiKey, User
    from apps.accounts.services import api_key_issue
    from apps.chat.services import conversation_create

    call_command("migrate", verbosity=0)
    run = time.strftime("%H%M%S")
    users = []
    for index in range(USERS):
        user = User.objects.create_user(f"load-{run}-u{index}", password=os.urandom(16).hex())
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        conversation = conversation_create(owner=user)
        conversation.temperature, conversation.max_tokens = 0.0, TOKENS
        conversation.save()
        users.append(
            {"id": user.pk, "session": session.session_key, "conversation": conversation.pk}
        )
    clients = []
    for index in range(CLIENTS):
        user = User.objects.create_user(f"load-{run}-c{index}", password=os.urandom(16).hex())
        _, key = api_key_issue(user=user, name="load", scopes=[ApiKey.Scope.INFERENCE])
        clients.append({"id": user.pk, "key": key})
    return {"users": users, "clients": clients, "model": conversation.model.slug}


async def chat_user(base: str, user: dict[str, Any], index: int, until: float) -> list[dict]:
    import websockets

    results = []
    url = base.replace("http", "ws") + f"/ws/chat/{user['conversation']}/"
    headers = {"Cookie": f"sessionid={user['session']}", "Origin": base}
    try:
        async with websockets.connect(url, additional_headers=headers, max_size=2**22) as socket:
            turn = 0
            while time.monotonic() < until:
                text = PROMPTS[(index + turn) % len(PROMPTS)]
                turn += 1
                sent = time.monotonic()
                first = None
                await socket.send(json.dumps({"action": "send", "text": text}))
                while True:
                    event = json.loads(await asyncio.wait_for(socket.recv(), 600))
                    kind = event.get("type")
                    if kind == "delta" and event.get("text") and first is None:
                        first = time.monotonic()
                    elif kind == "done":
                        results.append(
                            {
                                "via": "ws",
                                "generation": event["generation"],
                                "ttft": None if first is None else first - sent,
                                "seconds": time.monotonic() - sent,
                            }
                        )
                        break
                    elif kind == "error":
                        results.append({"via": "ws", "error": event["message"]})
                        break
    except Exception as exc:  # recorded, and the run fails on it
        results.append({"via": "ws", "error": repr(exc)})
    return results


async def api_client(base: str, client_info: dict[str, Any], index: int, until: float, model: str):
    import httpx

    results = []
    headers = {"Authorization": f"Bearer {client_info['key']}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=600) as client:
        turn = 0
        while time.monotonic() < until:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": PROMPTS[(index + turn) % len(PROMPTS)]}],
                "max_tokens": TOKENS,
                "temperature": 0,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            turn += 1
            sent = time.monotonic()
            first = None
            tokens = 0
            try:
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    if response.status_code == 429:
                        results.append({"via": "api", "status": 429})
                        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                        continue
                    if response.status_code != 200:
                        text = (await response.aread()).decode(errors="replace")
                        results.append({"via": "api", "error": f"{response.status_code} {text}"})
                        continue
                    completion = None
                    async for line in response.aiter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        chunk = json.loads(line.removeprefix("data: "))
                        completion = chunk.get("id", completion)
                        if chunk.get("usage"):
                            tokens = chunk["usage"]["completion_tokens"]
                        if "error" in chunk:
                            raise RuntimeError(chunk["error"])
                        for choice in chunk.get("choices", []):
                            if choice.get("delta", {}).get("content") and first is None:
                                first = time.monotonic()
                results.append(
                    {
                        "via": "api",
                        "completion": completion,
                        "tokens": tokens,
                        "ttft": None if first is None else first - sent,
                        "seconds": time.monotonic() - sent,
                    }
                )
            except Exception as exc:
                results.append({"via": "api", "error": repr(exc)})
    return results


def check_record(people: dict[str, Any], results: list[dict]) -> dict[str, Any]:
    """What the database holds for the load's accounts, against what the clients were told."""
    from apps.chat.models import Message
    from apps.inference.models import Generation, UsageRecord

    ids = [u["id"] for u in people["users"]] + [c["id"] for c in people["clients"]]
    rows = Generation.objects.filter(user_id__in=ids)
    answered_ws = [r["generation"] for r in results if r.get("via") == "ws" and "generation" in r]
    answered_api = [r for r in results if r.get("via") == "api" and "completion" in r]
    statuses: dict[str, int] = {}
    for status in rows.values_list("status", flat=True):
        statuses[status] = statuses.get(status, 0) + 1
    usage_rows = UsageRecord.objects.filter(generation__in=rows).count()
    answers = Message.objects.filter(generation__in=rows).count()
    duplicated_messages = len(answered_ws) - len(set(answered_ws))
    return {
        "generations": rows.count(),
        "by_status": statuses,
        "accepted": len(answered_ws) + len(answered_api),
        "usage_rows": usage_rows,
        "chat_answer_messages": answers,
        "chat_answers_told": len(answered_ws),
        "duplicated_answers": duplicated_messages,
        "ok": (
            rows.count() == len(answered_ws) + len(answered_api)
            and statuses.get("succeeded", 0) == rows.count()
            and usage_rows == rows.count()
            and answers == len(answered_ws)
            and duplicated_messages == 0
        ),
    }


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def load(backend: str) -> dict[str, Any]:
    """The whole load against a worker on ``backend``; its summary, with the record's check."""
    people = setup()
    log(
        f"{backend}: {USERS} chat users and {CLIENTS} API clients for {SECONDS:.0f} s, "
        f"{TOKENS} tokens each"
    )
    base = f"http://127.0.0.1:{WEB_PORT}"
    web = start(f"load-web-{backend}", [PYTHON, "manage.py", "serve", "--port", str(WEB_PORT)])
    worker = start(f"load-worker-{backend}", WORKER, {"INFERENCE_ENGINE": backend})
    try:
        wait_http(f"{base}/readyz", 600)

        async def everyone() -> list[dict]:
            started = time.monotonic()
            until = started + SECONDS
            tasks = [chat_user(base, u, i, until) for i, u in enumerate(people["users"])]
            tasks += [
                api_client(base, c, i, until, people["model"])
                for i, c in enumerate(people["clients"])
            ]
            nested = await asyncio.gather(*tasks)
            return [r for part in nested for r in part]

        started = time.monotonic()
        results = asyncio.run(everyone())
        wall = time.monotonic() - started
    finally:
        stop(web)
        stop(worker)
    record = check_record(people, results)
    errors = [r["error"] for r in results if "error" in r]
    done = [r for r in results if "seconds" in r]
    from apps.inference.models import Generation

    ids = [u["id"] for u in people["users"]] + [c["id"] for c in people["clients"]]
    tokens = sum(
        Generation.objects.filter(user_id__in=ids).values_list("completion_tokens", flat=True)
    )
    summary: dict[str, Any] = {
        "engine": backend,
        "users": USERS,
        "clients": CLIENTS,
        "seconds": SECONDS,
        "max_tokens": TOKENS,
        "wall_s": round(wall, 1),
        "completed": len(done),
        "completed_ws": sum(1 for r in done if r["via"] == "ws"),
        "completed_api": sum(1 for r in done if r["via"] == "api"),
        "rate_limited_429": sum(1 for r in results if r.get("status") == 429),
        "errors": errors[:20],
        "error_count": len(errors),
        "tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1),
        "requests_per_s": round(len(done) / wall, 2),
        "record": record,
    }
    for via in ("ws", "api"):
        ttfts = [r["ttft"] for r in done if r["via"] == via and r["ttft"] is not None]
        summary[f"ttft_p50_ms_{via}"] = round(1000 * (percentile(ttfts, 50) or 0))
        summary[f"ttft_p95_ms_{via}"] = round(1000 * (percentile(ttfts, 95) or 0))
    log(json.dumps({k: v for k, v in summary.items() if k != "errors"}, indent=2))
    return summary


def main() -> None:
    ensure_database()
    runs = {backend: load(backend) for backend in ENGINES}
    results: dict[str, Any] = {"runs": runs}
    if {"llamacpp", "transformers"} <= set(runs):
        results["completed_llamacpp_over_transformers"] = round(
            runs["llamacpp"]["completed"] / max(1, runs["transformers"]["completed"]), 2
        )
        log(
            f"answers completed, llama.cpp ÷ torch: {results['completed_llamacpp_over_transformers']}"
        )
    out = HERE / "results" / "load.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    failed = [b for b, r in runs.items() if r["error_count"] or not r["record"]["ok"]]
    if failed:
        for backend in failed:
            run = runs[backend]
            log(
                f"FAILED on {backend}: {run['error_count']} errors, record ok={run['record']['ok']}"
            )
        log(f"logs in {LOGS}")
        raise SystemExit(1)
    log(f"passed; written to {out}")


if __name__ == "__main__":
    main()
