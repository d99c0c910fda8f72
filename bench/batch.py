"""``make bench-batch``: what a running batch costs interactive users, against the platform in
its production shape (the ASGI server, a Celery inference worker on the default engine,
Postgres, Redis), in one run on this machine.

- Idle: a chat request's time to first token (streamed, greedy, 32 new tokens), asked
  ``ASKS`` times one after another; the p50 and p95.
- With a batch of ``BATCH`` chat requests (64 new tokens each) in progress: the same
  requests, asked while the batch runs, and the same figures; then the ratio of the p50s (the
  issue's bound: at most 1.5).
- The batch's own rate: requests finished per minute while the interactive requests ran, and
  after them (the batch alone).

Writes bench/results/batch.json and prints the figures. ``lscpu``'s model and flags are in it.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import httpx  # noqa: E402
import openai  # noqa: E402
import run  # noqa: E402 (sets the bench database and Redis for the platform it starts)
from client import sse_stream  # noqa: E402

OUT = HERE / "results/batch.json"
ASKS = 20
BATCH = 200
QUESTION = [{"role": "user", "content": "Name three rivers of Europe."}]


def ttfts(url: str, headers: dict[str, str], model: str) -> list[float]:
    async def go() -> list[float]:
        async with httpx.AsyncClient(timeout=300) as client:
            seen = []
            for i in range(ASKS):
                sample = await sse_stream(
                    client, url, i, headers=headers, model=model, chat=QUESTION, max_tokens=32
                )
                if sample.ttft is None:
                    raise SystemExit(f"a chat request failed: {sample.error}")
                seen.append(sample.ttft)
                await asyncio.sleep(0.2)
            return seen

    return asyncio.run(go())


def figures(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 1),
        "p95_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
        "mean_ms": round(1000 * statistics.mean(ordered), 1),
    }


def main() -> None:
    results: dict[str, Any] = {"machine": run.machine(), "asks": ASKS, "batch": BATCH}
    results["batch_concurrency"] = int(os.environ.get("BATCH_CONCURRENCY", "4"))
    with run.serving_platform() as (base, headers, setup):
        results.update(measure(base, headers, setup))
    OUT.write_text(json.dumps(results, indent=1))
    run.log(f"wrote {OUT}; process logs in {run.LOGS}")


def measure(base: str, headers: dict[str, str], setup: dict[str, Any]) -> dict[str, Any]:
    """Chat TTFT idle, then with a batch in progress, and the batch's rate with and without."""
    results: dict[str, Any] = {}
    url = f"{base}/v1/chat/completions"
    idle = ttfts(url, headers, setup["model"])
    results["idle"] = figures(idle)
    run.log(f"idle TTFT: {results['idle']}")
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=setup["key"], max_retries=0)
    lines = "\n".join(
        json.dumps(
            {
                "custom_id": f"b{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": setup["model"],
                    "messages": [{"role": "user", "content": f"Write a story, number {i}."}],
                    "temperature": 0,
                    "max_tokens": 64,
                },
            }
        )
        for i in range(BATCH)
    )
    upload = client.files.create(file=("bench.jsonl", lines.encode()), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    while client.batches.retrieve(batch.id).request_counts.completed < 4:
        time.sleep(0.5)
    started, before = time.monotonic(), client.batches.retrieve(batch.id).request_counts
    busy = ttfts(url, headers, setup["model"])
    during = client.batches.retrieve(batch.id)
    if during.status != "in_progress":
        raise SystemExit(f"the batch ended before the chat requests did: {during.status}")
    busy_seconds = time.monotonic() - started
    results["with_batch"] = figures(busy)
    results["ttft_p50_ratio"] = round(
        results["with_batch"]["p50_ms"] / results["idle"]["p50_ms"], 2
    )
    done_during = during.request_counts.completed - before.completed
    results["batch_per_minute_while_chatting"] = round(60 * done_during / busy_seconds, 1)
    run.log(f"TTFT with the batch: {results['with_batch']} ({results['ttft_p50_ratio']}x)")
    alone_from, alone_count = time.monotonic(), during.request_counts.completed
    time.sleep(30)
    after = client.batches.retrieve(batch.id).request_counts.completed
    results["batch_per_minute_alone"] = round(
        60 * (after - alone_count) / (time.monotonic() - alone_from), 1
    )
    run.log(
        f"batch rate: {results['batch_per_minute_while_chatting']}/min while chatting, "
        f"{results['batch_per_minute_alone']}/min alone"
    )
    client.batches.cancel(batch.id)
    return results


if __name__ == "__main__":
    main()
