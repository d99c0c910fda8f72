"""``make bench-evals``: an eval run's throughput against the engine's own ceiling, in one run
on this machine.

- The raw engine: the llama.cpp engine in this process, built as a worker builds it, answering
  the demo eval set's 60 prompts 16 at a time (greedy, ``NEW_TOKENS`` new tokens each); its
  aggregate completion tokens per second.
- The eval run: the same 60 items as the demo set, run on the packaged model through the
  platform in its production shape (a Celery inference worker on Postgres and Redis, the
  runner keeping EVAL_CONCURRENCY = 16 items in flight) with three graders; completion tokens
  per second from the run's claim to its end, and the ratio to the raw engine's (the issue's
  bound: at least 0.8).

Writes bench/results/evals.json and prints the figures. ``lscpu``'s model and flags are in it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402 (sets the bench database and Redis for the platform it starts)

OUT = HERE / "results/evals.json"
NEW_TOKENS = 64
STREAMS = 16
GRADERS = [
    {"type": "string_check", "operation": "ilike"},
    {"type": "numeric", "tolerance": 0},
    {"type": "json_schema"},
]


def demo_messages() -> list[list[dict[str, str]]]:
    from apps.evals.services import DEMO

    items = [json.loads(line) for line in DEMO.read_text().splitlines()]
    return [[{"role": "user", "content": item["input"]}] for item in items]


def raw_engine(prompts: list[list[dict[str, str]]]) -> dict[str, Any]:
    """The engine alone: every prompt, ``STREAMS`` at a time, as one batch of threads."""
    from django.conf import settings

    from apps.catalog.models import ModelVersion
    from apps.catalog.packaged import PACKAGED
    from apps.catalog.selectors import version_spec
    from apps.inference.engines.llamacpp import LlamaCppEngine
    from apps.inference.protocol import Finished, GenerationRequest, SamplingParams

    version = ModelVersion.objects.get(model__slug=PACKAGED[0]["slug"], is_active=True)
    engine = LlamaCppEngine(
        version_spec(version),
        cache_dir=settings.MODEL_CACHE_DIR,
        threads=settings.INFERENCE_THREADS,
        max_batch=STREAMS,
        kv_budget_bytes=settings.INFERENCE_KV_CACHE_MB << 20,
        prefill_tokens=settings.INFERENCE_PREFILL_TOKENS,
        weight_type=settings.INFERENCE_GGUF_TYPE,
    )
    engine.wait_loaded(timeout=600)
    tokens = [0] * len(prompts)
    next_prompt = iter(range(len(prompts)))
    lock = threading.Lock()

    def stream() -> None:
        while True:
            with lock:
                index = next(next_prompt, None)
            if index is None:
                return
            request = GenerationRequest(
                request_id=str(uuid.uuid4()),
                params=SamplingParams(temperature=0, max_tokens=NEW_TOKENS),
                messages=prompts[index],
            )
            for event in engine.generate(request):
                if isinstance(event, Finished):
                    tokens[index] = event.completion_tokens

    started = time.monotonic()
    threads = [threading.Thread(target=stream) for _ in range(STREAMS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - started
    engine.close()
    return {
        "streams": STREAMS,
        "prompts": len(prompts),
        "completion_tokens": sum(tokens),
        "seconds": round(seconds, 2),
        "tokens_per_second": round(sum(tokens) / seconds, 1),
    }


def eval_run(setup: dict[str, Any]) -> dict[str, Any]:
    """The demo set run through the platform's worker with the three graders."""
    from apps.accounts.models import User
    from apps.catalog.models import LanguageModel
    from apps.evals.models import EvalRun
    from apps.evals.services import eval_run_start, eval_set_add_demo
    from apps.inference.models import Generation

    owner = User.objects.get(username="bench")
    eval_set = eval_set_add_demo(owner=owner)
    model = LanguageModel.objects.get(slug=setup["model"])
    run_row = eval_run_start(
        owner=owner,
        eval_set=eval_set,
        model=model,
        graders=GRADERS,
        settings={"temperature": 0.0, "max_tokens": NEW_TOKENS},
    )
    deadline = time.monotonic() + 1800
    while not (found := EvalRun.objects.get(pk=run_row.pk)).is_finished:
        if time.monotonic() > deadline:
            raise SystemExit("the eval run did not finish in 30 minutes")
        time.sleep(0.5)
    if found.status != "succeeded":
        raise SystemExit(f"the eval run ended {found.status}: {found.error_message}")
    assert found.started_at is not None and found.finished_at is not None
    seconds = (found.finished_at - found.started_at).total_seconds()
    generations = Generation.objects.filter(
        pk__in=found.results.values_list("generation_id", flat=True)
    )
    tokens = sum(g.completion_tokens for g in generations)
    return {
        "items": found.total,
        "graders": [a["grader"] for a in found.aggregates],
        "completion_tokens": tokens,
        "seconds": round(seconds, 2),
        "tokens_per_second": round(tokens / seconds, 1),
        "aggregates": [
            {k: a[k] for k in ("grader", "mean", "low", "high", "passed", "failed", "errored")}
            for a in found.aggregates
        ],
    }


def main() -> None:
    results: dict[str, Any] = {"machine": run.machine(), "new_tokens": NEW_TOKENS}
    with run.serving_platform() as (_base, _headers, setup):
        run.log("the demo eval set through the platform")
        results["eval_run"] = eval_run(setup)
        run.log("the raw engine at 16 streams on the same prompts")
        results["raw_engine"] = raw_engine(demo_messages())
    results["ratio"] = round(
        results["eval_run"]["tokens_per_second"] / results["raw_engine"]["tokens_per_second"], 3
    )
    OUT.write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=1))
    run.log(f"wrote {OUT}; process logs in {run.LOGS}")


if __name__ == "__main__":
    main()
