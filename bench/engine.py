"""One engine in this process (no server, no queue), built as a worker builds it; for the torch
decoder also plain transformers ``generate`` on the same weights.

Usage: python bench/engine.py OUT.json llamacpp|transformers
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")

import django  # noqa: E402

django.setup()

from common import NEW_TOKENS, PROMPTS, Sample, document, messages, summarise  # noqa: E402
from django.conf import settings  # noqa: E402

from apps.catalog.packaged import PACKAGED  # noqa: E402
from apps.inference.engines.base import EngineClient  # noqa: E402
from apps.inference.engines.registry import get_engine  # noqa: E402
from apps.inference.protocol import (  # noqa: E402
    Finished,
    GenerationRequest,
    ModelSpec,
    SamplingParams,
    TokenDelta,
)

SMOLLM = PACKAGED[0]
SPEC = ModelSpec(
    key=f"{SMOLLM['slug']}@{SMOLLM['label']}",
    source_kind="packaged",
    source=SMOLLM["source"],
    context_length=SMOLLM["context_length"],
)


def engine_stream(
    engine: EngineClient, chat: list[dict[str, str]], max_tokens: int = NEW_TOKENS
) -> tuple[Sample, int]:
    """One greedy answer; its timings and its prompt's token count."""
    request = GenerationRequest(
        request_id=str(uuid.uuid4()),
        params=SamplingParams(temperature=0, max_tokens=max_tokens),
        messages=chat,
    )
    start = time.monotonic()
    first = last = None
    tokens = prompt_tokens = 0
    for event in engine.generate(request):
        if isinstance(event, TokenDelta) and event.text:
            first = first or time.monotonic()
            last = time.monotonic()
        if isinstance(event, Finished):
            tokens, prompt_tokens = event.completion_tokens, event.prompt_tokens
    return Sample(start, first, last, time.monotonic(), tokens), prompt_tokens


def engine_concurrent(engine: EngineClient, streams: int) -> list[Sample]:
    samples: list[Sample] = []

    def one(index: int) -> None:
        samples.append(engine_stream(engine, messages(index))[0])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return samples


def cold_prefill(engine: EngineClient) -> dict[str, Any]:
    """A long prompt no cache holds, one token out: how fast the engine reads a prompt."""
    chat = [{"role": "user", "content": document(uuid.uuid4().hex[:8]) + "\n\nSummarise it."}]
    sample, prompt_tokens = engine_stream(engine, chat, max_tokens=1)
    seconds = (sample.first or sample.end) - sample.start
    return {
        "prompt_tokens": prompt_tokens,
        "ttft_ms": round(seconds * 1000, 1),
        "prefill_tok_s": round(prompt_tokens / seconds, 1),
    }


def plain_generate(dtype: Any) -> list[Sample]:
    """transformers' ``generate`` on the same weights, one prompt at a time, timed by a streamer."""
    import torch
    from transformers import TextIteratorStreamer

    from apps.inference.engines.transformers_backend import load_causal_lm

    tokenizer, model = load_causal_lm(SPEC, settings.MODEL_CACHE_DIR, dtype=dtype)
    model.eval()
    samples = []
    for index in [0, *range(len(PROMPTS))]:  # the first run warms up and is not kept
        inputs = tokenizer.apply_chat_template(
            messages(index), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)
        out: dict[str, Any] = {}

        def run(inputs: Any = inputs, streamer: Any = streamer, out: Any = out) -> None:
            with torch.inference_mode():
                out["ids"] = model.generate(
                    **inputs, max_new_tokens=NEW_TOKENS, do_sample=False, streamer=streamer
                )

        start = time.monotonic()
        thread = threading.Thread(target=run)
        thread.start()
        first = last = None
        for piece in streamer:
            if piece:
                first = first or time.monotonic()
                last = time.monotonic()
        thread.join()
        tokens = out["ids"].shape[1] - inputs["input_ids"].shape[1]
        samples.append(Sample(start, first, last, time.monotonic(), int(tokens)))
    return samples[1:]


def main() -> None:
    out, backend = Path(sys.argv[1]), sys.argv[2]
    settings.INFERENCE_ENGINE = backend
    engine = get_engine(SPEC)  # as a worker builds it, from settings
    engine.wait_loaded(timeout=600)  # type: ignore[attr-defined]
    engine_stream(engine, messages(0))  # warm-up
    results: dict[str, Any] = {"weights": engine.weights}  # type: ignore[attr-defined]
    results["engine_1"] = summarise(
        [engine_stream(engine, messages(i))[0] for i in range(len(PROMPTS))]
    )
    for streams in (16, 32):
        results[f"engine_{streams}"] = summarise(engine_concurrent(engine, streams))
    results["cold_prefill"] = cold_prefill(engine)
    if backend == "transformers":
        import torch

        # The engine set torch to one thread (its GEMMs split the cores themselves); generate
        # uses torch's own threads, as many as the cores.
        torch.set_num_threads(settings.INFERENCE_THREADS or os.cpu_count() or 1)
        results["generate_float32"] = summarise(plain_generate(torch.float32))
        results["generate_bfloat16"] = summarise(plain_generate(torch.bfloat16))
    out.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
