"""Fine-tunes of the packaged GGUF model, written as GGUF at deployment and served by llama.cpp:
the export's layout checked tensor by tensor against the base file, the torch model and the
exported GGUF giving the same greedy tokens on held-out prompts (both in float32, so that any
difference would be the export's and not the kernels' rounding), and LoRA adapters sharing the
one loaded copy of the base weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

from apps.catalog.models import ModelVersion
from apps.catalog.selectors import version_spec
from apps.core.sources import local_folder
from apps.finetuning.models import JobEvent
from apps.inference.engines import registry
from apps.inference.engines.gguf import SharedModel, gguf_file
from apps.inference.engines.gguf_export import (
    ADAPTER_FILE,
    MODEL_FILE,
    ExportError,
    export_lora,
    export_model,
    rotary_rows,
)
from apps.inference.engines.llamacpp import LlamaCppEngine
from apps.inference.engines.transformers_backend import TransformersEngine, weights_location
from apps.inference.protocol import GenerationRequest, SamplingParams, TokenDelta
from tests.helpers import wait_for
from tests.inference.conftest import SMOLLM

from .conftest import DEMO, jsonl
from .test_trainer import run_job

pytestmark = pytest.mark.model


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DEMO / name).read_text().splitlines()]


HELD_OUT = [row["messages"][:-1] for row in rows("mascot-validation.jsonl")]


def greedy_ids(engine, messages: list[dict[str, str]], tag: str) -> list[int]:
    request = GenerationRequest(
        request_id=f"{tag}-{messages[-1]['content'][:20]}",
        params=SamplingParams(temperature=0, max_tokens=24),
        messages=messages,
    )
    return [t for e in engine.generate(request) if isinstance(e, TokenDelta) for t in e.token_ids]


def llama_engine(spec, cache_dir, weight_type: str) -> LlamaCppEngine:
    engine = LlamaCppEngine(
        spec, cache_dir=cache_dir, max_batch=2, kv_budget_bytes=64 << 20, weight_type=weight_type
    )
    engine.wait_loaded(timeout=300)
    return engine


def torch_answers(spec, cache_dir) -> list[list[int]]:
    """Greedy tokens from the torch engine in float32 (``cache_dir``: the converted base)."""
    engine = TransformersEngine(spec, cache_dir=cache_dir, dtype="float32")
    try:
        engine.wait_loaded(timeout=300)
        return [greedy_ids(engine, messages, "torch") for messages in HELD_OUT]
    finally:
        engine.close()


def test_rotary_rows_is_undone_by_transformers_gguf_reader():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    reader = LlamaTensorProcessor(config={"num_attention_heads": 8, "num_key_value_heads": 2})
    for name, heads in (("blk.0.attn_q.weight", 8), ("blk.0.attn_k.weight", 2)):
        weights = np.arange(heads * 64 * 3, dtype=np.float32).reshape(heads * 64, 3)
        reordered = rotary_rows(weights, heads)
        assert not np.array_equal(reordered, weights)
        assert np.array_equal(reader.process(reordered, name).weights, weights)
    with pytest.raises(ExportError, match="do not split into 5 heads"):
        rotary_rows(weights, 5)


def test_the_base_written_back_as_gguf_holds_the_base_files_tensors(tmp_path, model_cache_dir):
    """transformers' reading of the base file, written by ``export_model``: every tensor where
    llama.cpp has it (names and q/k row order), equal to the base's within F16's rounding, and
    the same metadata but the file type."""
    import gguf

    folder = tmp_path / "base"
    folder.mkdir()
    converted = weights_location(SMOLLM, model_cache_dir)
    (folder / "model.safetensors").symlink_to(f"{converted}/model.safetensors")
    written = gguf.GGUFReader(export_model(folder, gguf_file(SMOLLM)))
    base = gguf.GGUFReader(gguf_file(SMOLLM))
    assert [t.name for t in written.tensors] == [t.name for t in base.tensors]
    for ours, theirs in zip(written.tensors, base.tensors, strict=True):
        a = gguf.quants.dequantize(ours.data, ours.tensor_type)
        b = gguf.quants.dequantize(theirs.data, theirs.tensor_type)
        assert a.shape == b.shape, ours.name
        assert np.abs(a - b).max() <= 1e-3 * np.abs(b).max(), ours.name
    differ = {
        key
        for key, field in base.fields.items()
        if not key.startswith("GGUF.") and written.fields[key].contents() != field.contents()
    }
    assert differ == {"general.file_type"}


def test_an_adapter_gguf_cannot_hold_is_refused_with_the_reason(tmp_path):
    (tmp_path / "adapter_config.json").write_text(
        json.dumps({"r": 4, "lora_alpha": 8, "use_dora": True})
    )
    with pytest.raises(ExportError, match="DoRA"):
        export_lora(tmp_path, gguf_file(SMOLLM))
    assert [p.name for p in tmp_path.iterdir()] == ["adapter_config.json"]  # nothing written


def mascot_job(owner, model, method: str):
    data = jsonl(rows("mascot-train.jsonl")[:16])
    lr = 2e-3 if method == "lora" else 1e-4
    return run_job(
        owner,
        model,
        data,
        method,
        n_epochs=1,
        batch_size=8,
        learning_rate=lr,
        lora_rank=8,
        lora_alpha=16,
        validation_fraction=0,
    )


def test_a_lora_fine_tune_is_served_by_llama_cpp_over_the_shared_base(
    owner, chat_model, tmp_path, model_cache_dir
):
    job = mascot_job(owner, chat_model, "lora")
    assert job.status == "succeeded", job.error_message
    version = job.result_version
    spec = version_spec(version)
    folder = version.source
    assert (version.source_kind, version.engine) == (ModelVersion.Source.ADAPTER, "auto")
    assert registry.engine_for(spec) == "llamacpp"
    written = job.events.get(message__startswith="Written as GGUF")
    assert written.data["gguf"] == ADAPTER_FILE and written.level == JobEvent.Level.INFO

    # The torch model (its LoRA merged, float32) and llama.cpp (the base file's weights as
    # float32, the adapter applied by the context) choose the same tokens.
    torch_ids = torch_answers(spec, model_cache_dir)
    base_ids = torch_answers(SMOLLM, model_cache_dir)
    assert any(a != b for a, b in zip(torch_ids, base_ids, strict=True))  # it learned something
    served = llama_engine(spec, tmp_path, "f32")
    try:
        assert [greedy_ids(served, m, "lora") for m in HELD_OUT] == torch_ids
    finally:
        served.close()

    # Served as the workers serve it: the base model and the adapter hold one copy of the base
    # weights, counted once; the base answers as before, the adapter as the fine-tune does.
    base = llama_engine(SMOLLM, tmp_path, "q8_0")
    question = HELD_OUT[0]
    alone = greedy_ids(base, question, "alone")
    tuned = llama_engine(spec, tmp_path, "q8_0")
    try:
        assert tuned._shared is base._shared and tuned._model == base._model
        assert base.memory_bytes == base._shared.bytes > 100 << 20
        adapter_bytes = (local_folder(folder) / ADAPTER_FILE).stat().st_size
        assert tuned.memory_bytes == adapter_bytes < base.memory_bytes // 10
        assert greedy_ids(base, question, "beside") == alone
        assert greedy_ids(tuned, question, "tuned") != alone
        base.close()  # the adapter keeps the weights, and now counts them
        weights = tuned._shared.bytes
        wait_for(lambda: tuned.memory_bytes == adapter_bytes + weights, what="the handover")
        assert greedy_ids(tuned, question, "after") != alone
    finally:
        base.close()
        tuned.close()
    wait_for(lambda: not SharedModel._held, what="the weights to be freed")


def test_a_full_fine_tune_is_written_as_its_own_gguf(owner, chat_model, tmp_path, model_cache_dir):
    job = mascot_job(owner, chat_model, "full")
    assert job.status == "succeeded", job.error_message
    version = job.result_version
    spec = version_spec(version)
    folder = local_folder(version.source)
    assert (version.source_kind, version.engine) == (ModelVersion.Source.LOCAL, "auto")
    assert registry.engine_for(spec) == "llamacpp"
    assert job.events.filter(message__startswith="Written as GGUF").exists()
    assert gguf_file(spec) == folder / MODEL_FILE

    torch_ids = torch_answers(spec, model_cache_dir)
    # The deployed file holds F16 matrices; written again in F32 it computes as torch does.
    export_model(folder, gguf_file(SMOLLM), matrices="f32")
    served = llama_engine(spec, tmp_path, "keep")
    try:
        assert [greedy_ids(served, m, "full") for m in HELD_OUT] == torch_ids
    finally:
        served.close()
