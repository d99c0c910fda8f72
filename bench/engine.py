"""The raw engine and plain transformers ``generate``, in this process (no server, no queue).

Usage: python bench/engine.py OUT.json
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")

import django  # noqa: E402

django.setup()

import torch  # noqa: E402
from common import NEW_TOKENS, PROMPTS, Sample, messages, summarise  # noqa: E402
from django.conf import settings  # noqa: E402

from apps.catalog.packaged import PACKAGED  # noqa: E402
from apps.inference.engines.registry import get_engine  # noqa: E402
from apps.inference.engines.transformers_backend import (  # noqa: E402
    TransformersEngine,
    load_causal_lm,
)
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


def engine_stream(engine: TransformersEngine, index: int) -> Sample:
    request = GenerationRequest(
        request_id=str(uuid.uuid4()),
        params=SamplingParams(temperature=0, max_tokens=NEW_TOKENS),
        messages=messages(index),
    )
    start = time.monotonic()
    first = last = None
    tokens = 0
    for event in engine.generate(request):
        if isinstance(event, TokenDelta) and event.text:
            first = first or time.monotonic()
            last = time.monotonic()
        if isinstance(event, Finished):
            tokens = event.completion_tokens
    return Sample(start, first, last, time.monotonic(), tokens)


def engine_concurrent(engine: TransformersEngine, streams: int) -> list[Sample]:
    samples: list[Sample] = []
    threads = [
        threading.Thread(target=lambda i=i: samples.append(engine_stream(engine, i)))
        for i in range(streams)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return samples


def plain_generate(dtype: torch.dtype) -> list[Sample]:
    """transformers' ``generate`` on the same weights, one prompt at a time, timed by a streamer."""
    from transformers import TextIteratorStreamer

    tokenizer, model = load_causal_lm(SPEC, settings.MODEL_CACHE_DIR, dtype=dtype)
    model.eval()
    samples = []
    for index in [0, *range(len(PROMPTS))]:  # the first run warms up and is not kept
        inputs = tokenizer.apply_chat_template(
            messages(index), add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)
        out: dict[str, torch.Tensor] = {}

        def run(inputs=inputs, streamer=streamer, out=out) -> None:
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
    results: dict[str, object] = {}
    engine = cast(TransformersEngine, get_engine(SPEC))  # as a worker builds it, from settings
    engine.wait_loaded(timeout=600)
    engine_stream(engine, 0)  # warm-up
    results["engine_weights"] = engine.weights
    results["engine_1"] = summarise([engine_stream(engine, i) for i in range(len(PROMPTS))])
    results["engine_16"] = summarise(engine_concurrent(engine, 16))
    # The engine set torch to one thread (its GEMMs split the cores themselves); generate uses
    # torch's own threads, as many as the cores.
    torch.set_num_threads(settings.INFERENCE_THREADS or os.cpu_count() or 1)
    results["generate_float32"] = summarise(plain_generate(torch.float32))
    results["generate_bfloat16"] = summarise(plain_generate(torch.bfloat16))
    Path(sys.argv[1]).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
