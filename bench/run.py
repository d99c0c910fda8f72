"""``make bench``: both engines raw, a naive server and the platform in its production shape on
each engine, with the same prompts (greedy, 128 new tokens), in one run on this machine; and a
six-turn conversation over a long document and a cold long prompt, TTFT each.

Writes bench/results/latest.json and bench/results/latest.md. With PEER=llamacpp it also measures
llama.cpp's server on the same GGUF file with 16 and 32 slots, and llama-batched-bench at 16 and
32 sequences (see peer_llamacpp.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

BENCH_DATABASE = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/playground_bench"
)
BENCH_REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
WEB_PORT, NAIVE_PORT, PEER_PORT = 8765, 8766, 8767
LEVELS = [1, 4, 16, 32]
PYTHON = sys.executable

os.environ.update(
    DJANGO_SETTINGS_MODULE="playground.settings",
    DATABASE_URL=BENCH_DATABASE,
    REDIS_URL=BENCH_REDIS,
)

import httpx  # noqa: E402
from client import cold_prompt, concurrently, conversation, sse_stream, ws_stream  # noqa: E402
from common import NEW_TOKENS, PROMPTS, Sample, summarise  # noqa: E402
from report import markdown, targets  # noqa: E402

LOGS = Path(tempfile.mkdtemp(prefix="playground-bench-"))


# The inference worker both benchmarks run: production's command, 32 rows at a time.
WORKER = [
    *(str(ROOT / ".venv/bin/celery"), "-A", "playground", "worker", "-Q", "inference"),
    *("--pool", "threads", "--concurrency", "32", "--loglevel", "INFO"),
]


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def start(
    name: str, command: list[str], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    out = open(LOGS / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_http(url: str, timeout: float, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, headers=headers, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {timeout:.0f}s; logs in {LOGS}")


# -- the parts -----------------------------------------------------------------------------------


# Raw engines: llama.cpp as a worker runs it (INFERENCE_GGUF_TYPE=auto), llama.cpp on the GGUF
# file's own weights, and the torch decoder: name → (INFERENCE_ENGINE, INFERENCE_GGUF_TYPE).
ENGINES = {
    "llamacpp": ("llamacpp", "auto"),
    "llamacpp-keep": ("llamacpp", "keep"),
    "transformers": ("transformers", "auto"),
}


def bench_engine(name: str) -> dict[str, Any]:
    backend, weights = ENGINES[name]
    out = LOGS / f"engine-{name}.json"
    log(
        f"raw engine in-process: {name}" + (", and plain generate" if backend != "llamacpp" else "")
    )
    with open(LOGS / f"engine-{name}.log", "wb") as engine_log:
        subprocess.run(
            [PYTHON, str(HERE / "engine.py"), str(out), backend],
            cwd=ROOT,
            check=True,
            stdout=engine_log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "INFERENCE_GGUF_TYPE": weights},
        )
    results: dict[str, Any] = json.loads(out.read_text())
    for name in ("engine_1", "engine_16", "engine_32"):
        log(f"  {name}: {brief(results[name])}")
    log(f"  cold prompt: {results['cold_prefill']}")
    return results


def dialogue(url: str, headers: dict[str, str], model: str) -> dict[str, Any]:
    """The multi-turn run and a cold long prompt against one server."""

    async def run() -> tuple[list[Sample], Sample]:
        async with httpx.AsyncClient(timeout=600) as client:
            tag = os.urandom(4).hex()
            turns = await conversation(client, url, headers=headers, model=model, tag=tag)
            cold = await cold_prompt(
                client, url, headers=headers, model=model, tag=os.urandom(4).hex()
            )
            return turns, cold

    turns, cold = asyncio.run(run())
    errors = [s.error for s in [*turns, cold] if s.error]
    if errors:
        raise SystemExit(f"the multi-turn run failed: {errors[0]}; logs in {LOGS}")
    cold_seconds = (cold.first or cold.end) - cold.start
    result = {
        "fresh_ttft_ms": _ms(turns[0].ttft),
        "turn_ttft_ms": [_ms(s.ttft) for s in turns[1:]],
        "turn_prompt_tokens": [s.prompt_tokens for s in turns[1:]],
        "cold": {
            "prompt_tokens": cold.prompt_tokens,
            "ttft_ms": _ms(cold_seconds),
            "prefill_tok_s": round(cold.prompt_tokens / cold_seconds, 1),
        },
    }
    log(f"  multi-turn TTFT (ms): fresh {result['fresh_ttft_ms']}, turns {result['turn_ttft_ms']}")
    log(f"  cold long prompt: {result['cold']}")
    return result


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def sse_levels(url: str, headers: dict[str, str], model: str, levels: list[int]) -> dict[str, Any]:
    results = {}
    for streams in levels:

        async def run(streams: int = streams) -> list[Sample]:
            limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
            async with httpx.AsyncClient(timeout=600, limits=limits) as client:
                samples = await concurrently(
                    streams, lambda i: sse_stream(client, url, i, headers=headers, model=model)
                )
            return samples  # type: ignore[return-value]

        samples = asyncio.run(run())
        results[str(streams)] = summarise(samples)
        log(f"  {streams:>2} streams: {brief(results[str(streams)])}")
    return results


def brief(summary: dict[str, Any]) -> str:
    return (
        f"{summary['aggregate_tok_s']} tok/s in all, {summary['per_stream_tok_s']} per stream, "
        f"TTFT p50 {summary['ttft_p50_ms']} ms p95 {summary['ttft_p95_ms']} ms, "
        f"{len(summary['errors'])} errors"
    )


def bench_naive() -> dict[str, Any]:
    log("naive server (generate per request, one at a time)")
    server = start("naive", [PYTHON, str(HERE / "naive_server.py"), str(NAIVE_PORT)])
    try:
        wait_http(f"http://127.0.0.1:{NAIVE_PORT}/", 600)
        url = f"http://127.0.0.1:{NAIVE_PORT}/v1/chat/completions"
        sse_levels(url, {}, "naive", [1])  # warm-up
        return sse_levels(url, {}, "naive", [1, 16])
    finally:
        stop(server)


def platform_setup(ws_streams: int) -> dict[str, Any]:
    """A bench account with a key, a signed-in session and one conversation per WebSocket stream."""
    import django

    django.setup()
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command

    from apps.accounts.models import ApiKey, User
    from apps.accounts.services import api_key_issue
    from apps.chat.services import conversation_create

    call_command("migrate", verbosity=0)
    user = User.objects.filter(username="bench").first() or User.objects.create_user(
        "bench", password=os.urandom(16).hex()
    )
    api_key, key = api_key_issue(user=user, name="bench", scopes=[ApiKey.Scope.INFERENCE])
    api_key.requests_per_minute = 100_000
    api_key.save()
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    conversations = []
    for _ in range(ws_streams):
        conversation = conversation_create(owner=user)
        conversation.temperature, conversation.max_tokens = 0.0, NEW_TOKENS
        conversation.save()
        conversations.append(str(conversation.pk))
    return {
        "key": key,
        "session": session.session_key,
        "conversations": conversations,
        "model": conversation.model.slug,
    }


@contextlib.contextmanager
def serving_platform() -> Iterator[tuple[str, dict[str, str], dict[str, Any]]]:
    """The platform in its production shape (the ASGI server, an inference worker, the bench
    database and Redis) with the model loaded and answering: (its URL, the bench key's headers,
    ``platform_setup``'s account); stopped at the end."""
    ensure_database()
    import redis

    redis.Redis.from_url(BENCH_REDIS).flushdb()
    setup = platform_setup(1)  # one conversation: it names the default model
    worker = start("worker", WORKER)
    web = start("web", [PYTHON, "manage.py", "serve", "--port", str(WEB_PORT)])
    try:
        base = f"http://127.0.0.1:{WEB_PORT}"
        headers = {"Authorization": f"Bearer {setup['key']}"}
        wait_http(f"{base}/v1/models", 120, headers)
        log("waiting for the worker to load the model")
        deadline = time.monotonic() + 600
        url = f"{base}/v1/chat/completions"
        while not (warm := sse_levels(url, headers, setup["model"], [1])["1"])["tokens"]:
            if time.monotonic() > deadline:
                raise SystemExit(f"the platform did not answer: {warm['errors']}")
            time.sleep(2)
        yield base, headers, setup
    finally:
        stop(web)
        stop(worker)


def generation_tokens(ids: list[str]) -> dict[str, int]:
    from apps.inference.models import Generation

    return {str(g.pk): g.completion_tokens for g in Generation.objects.filter(pk__in=ids)}


def ensure_database() -> None:
    import psycopg

    name = BENCH_DATABASE.rsplit("/", 1)[1]
    admin = BENCH_DATABASE.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        if not connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone():
            connection.execute(f'CREATE DATABASE "{name}"')


def bench_platform(backend: str, *, levels: list[int], ws: bool) -> dict[str, Any]:
    log(f"platform on {backend}: uvicorn + Celery inference worker + Redis + Postgres")
    ensure_database()
    import redis

    redis.Redis.from_url(BENCH_REDIS).flushdb()
    setup = platform_setup(sum(levels) + 1 if ws else 1)
    worker = start(f"worker-{backend}", WORKER, {"INFERENCE_ENGINE": backend})
    web = start("web", [PYTHON, "manage.py", "serve", "--port", str(WEB_PORT)])
    try:
        base = f"http://127.0.0.1:{WEB_PORT}"
        headers = {"Authorization": f"Bearer {setup['key']}"}
        wait_http(f"{base}/v1/models", 120, headers)
        url = f"{base}/v1/chat/completions"
        log("  waiting for the worker to load the model")
        deadline = time.monotonic() + 600
        while True:
            warm = sse_levels(url, headers, setup["model"], [1])["1"]
            if not warm["errors"] and warm["tokens"]:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the platform did not answer: {warm['errors']}; logs in {LOGS}")
            time.sleep(2)
        log("  API, server-sent events")
        results: dict[str, Any] = {"sse": sse_levels(url, headers, setup["model"], levels)}
        results["dialogue"] = dialogue(url, headers, setup["model"])
        if not ws:
            return results
        log("  chat WebSocket")
        conversations = iter(setup["conversations"][1:])
        results["ws"] = {}
        for streams in levels:
            mine = [next(conversations) for _ in range(streams)]

            async def run(mine: list[str] = mine) -> list[tuple[Sample, str]]:
                return await concurrently(  # type: ignore[return-value]
                    len(mine),
                    lambda i: ws_stream(
                        f"ws://127.0.0.1:{WEB_PORT}/ws/chat/{mine[i]}/",
                        i,
                        cookie=f"sessionid={setup['session']}",
                        origin=base,
                    ),
                )

            pairs = asyncio.run(run())
            tokens = generation_tokens([g for _, g in pairs if g])
            samples = []
            for sample, generation in pairs:
                sample.tokens = tokens.get(generation, 0)
                samples.append(sample)
            results["ws"][str(streams)] = summarise(samples)
            log(f"  {streams:>2} streams: {brief(results['ws'][str(streams)])}")
        return results
    finally:
        stop(web)
        stop(worker)


def bench_peer() -> dict[str, Any]:
    from peer_llamacpp import batched_bench, serve_llamacpp

    results: dict[str, Any] = {}
    for slots, levels in ((16, [1, 16]), (32, [32])):
        log(f"llama.cpp server on the same GGUF file, {slots} slots")
        server, model = serve_llamacpp(PEER_PORT, slots=slots, log_file=LOGS / "llamacpp.log")
        try:
            url = f"http://127.0.0.1:{PEER_PORT}/v1/chat/completions"
            wait_http(f"http://127.0.0.1:{PEER_PORT}/health", 600)
            sse_levels(url, {}, model, [1])  # warm-up
            results[f"server_{slots}"] = sse_levels(url, {}, model, levels)
            if slots == 16:  # cache_prompt is on by default: each slot keeps its prefix
                results["dialogue"] = dialogue(url, {}, model)
        finally:
            stop(server)
    log("llama-batched-bench at 16 and 32 sequences, on the file and on the weights we serve")
    results["batched_bench"] = batched_bench(
        [16, 32], prompt=32, new_tokens=128, log_file=LOGS / "llamacpp.log"
    )
    log(f"  the file's own weights: {results['batched_bench']}")
    # The rewritten weights the llama.cpp engine serves (INFERENCE_GGUF_TYPE=auto on a CPU),
    # written by the raw engine run into the model cache.
    [served] = sorted((ROOT / "var" / "models" / "gguf").glob("*.q8_0.gguf"))[-1:]
    results["batched_bench_served"] = batched_bench(
        [16, 32], prompt=32, new_tokens=128, log_file=LOGS / "llamacpp.log", gguf=served
    )
    log(f"  q8_0: {results['batched_bench_served']}")
    return results


# -- the report ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import torch
    import transformers

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in lscpu.splitlines())
    )
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "cpu": fields.get("Model name", cpu),
        "cpu_flags": fields.get("Flags", ""),
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "prompts": PROMPTS,
        "new_tokens": NEW_TOKENS,
    }


def main() -> None:
    peer = os.environ.get("PEER", "")
    results: dict[str, Any] = {"machine": machine()}
    results["engine"] = {name: bench_engine(name) for name in ENGINES}
    results["naive"] = bench_naive()
    results["platform"] = {
        "llamacpp": bench_platform("llamacpp", levels=LEVELS, ws=True),
        "transformers": bench_platform("transformers", levels=[1, 16, 32], ws=False),
    }
    if peer == "llamacpp":
        results["peer"] = bench_peer()
    elif peer:
        raise SystemExit(f"unknown PEER {peer!r}; the one known peer is llamacpp")
    results["targets"] = targets(results)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=1))
    (out / "latest.md").write_text(markdown(results))
    print(markdown(results))
    log(f"wrote {out / 'latest.json'} and {out / 'latest.md'}; process logs in {LOGS}")


if __name__ == "__main__":
    main()
