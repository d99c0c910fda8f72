"""Fine-tuning results written as GGUF, so that the llama.cpp engine serves them: a LoRA result
as a GGUF LoRA adapter over its base's own file (llama.cpp applies it per context, so the base
weights are loaded once however many adapters are served), a full fine-tune as a GGUF file of its
own that carries the base file's metadata (tokenizer, chat template, hyperparameters).

The weights are what training saved (safetensors, read with numpy, no torch), under transformers'
names; the ``gguf`` package's tensor-name map gives llama.cpp's. One layout differs: llama.cpp's
Llama rotates adjacent pairs of each attention head's dimensions where transformers' rotates its
two halves, so GGUF files hold the query and key projections with each head's rows reordered (and
transformers' GGUF loader reorders them back, which is how training saw them). ``rotary_rows``
reorders them again: a full fine-tune's q and k weights, and the B matrices (the output rows) of a
LoRA adapter's q and k.

Only the ``llama`` architecture's layout is written (SmolLM2, Llama, Mistral as converted);
another one raises ExportError, and its fine-tunes stay on the torch engine.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

ADAPTER_FILE = "adapter.gguf"  # beside a LoRA result's adapter_model.safetensors
MODEL_FILE = "model.gguf"  # beside a full fine-tune's model.safetensors
ARCHITECTURES = ("llama",)

_LORA_KEY = re.compile(r"base_model\.model\.(?P<module>.+)\.lora_(?P<part>[AB])\.weight")


class ExportError(Exception):
    """The result cannot be written as GGUF; the message says why, for the job's log."""


def rotary_rows(weights: Any, heads: int) -> Any:
    """``weights`` (rows = a projection's outputs, ``heads`` heads of equal width) with each
    head's rows reordered from transformers' layout to llama.cpp's: with a head width of 2h, its
    row ``i`` (first half) becomes row ``2i`` and its row ``h + i`` (second half) row ``2i + 1``."""
    rows = weights.shape[0]
    if rows % (2 * heads):
        raise ExportError(f"{rows} rows do not split into {heads} heads of even width")
    rest = weights.shape[1:]
    return weights.reshape(heads, 2, rows // heads // 2, *rest).swapaxes(1, 2).reshape(rows, *rest)


class _Base:
    """What an export needs to know of the base GGUF file."""

    def __init__(self, path: Path) -> None:
        import gguf

        self.path = path
        self.reader = gguf.GGUFReader(path)
        self.architecture = self._value("general.architecture")
        if self.architecture not in ARCHITECTURES:
            raise ExportError(
                f"the base model's architecture {self.architecture!s} has no GGUF export here "
                f"(only {', '.join(ARCHITECTURES)})"
            )
        self.blocks = int(self._value(f"{self.architecture}.block_count"))
        self.heads = int(self._value(f"{self.architecture}.attention.head_count"))
        self.kv_heads = int(self._value(f"{self.architecture}.attention.head_count_kv", self.heads))
        arch = next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == self.architecture)
        self.names = gguf.get_tensor_name_map(arch, self.blocks)

    def _value(self, key: str, default: Any = None) -> Any:
        field = self.reader.get_field(key)
        if field is None:
            if default is None:
                raise ExportError(f"{self.path.name} has no {key}")
            return default
        return field.contents()

    def gguf_name(self, module: str) -> str:
        """llama.cpp's tensor name for transformers' ``module`` weight (``model.layers.0...``)."""
        name = self.names.get_name(f"{module}.weight", try_suffixes=(".weight",))
        if name is None:
            raise ExportError(f"no GGUF tensor corresponds to {module}")
        return str(name)

    def reorder(self, name: str, rows_weights: Any) -> Any:
        """The rotary reordering for q and k projections; other tensors as they are."""
        if re.fullmatch(r"blk\.\d+\.attn_q\.weight", name):
            return rotary_rows(rows_weights, self.heads)
        if re.fullmatch(r"blk\.\d+\.attn_k\.weight", name):
            return rotary_rows(rows_weights, self.kv_heads)
        return rows_weights


def export_lora(adapter_dir: Path, base_gguf: Path) -> Path:
    """Write ``adapter_dir``'s peft LoRA adapter as ``adapter_dir/adapter.gguf`` for
    ``base_gguf`` (the file it was trained over); returns the file. llama.cpp scales each B·A by
    ``adapter.lora.alpha / rank``, as peft does by ``lora_alpha / r``."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if config.get("use_dora"):
        raise ExportError("DoRA adapters have no GGUF form")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ExportError("adapters with a rank or alpha per module have no GGUF form")
    rank = int(config["r"])
    alpha = float(config["lora_alpha"])
    if config.get("use_rslora"):  # peft scales by alpha / sqrt(r); llama.cpp by alpha / r
        alpha *= math.sqrt(rank)
    base = _Base(base_gguf)
    parts: dict[str, dict[str, Any]] = {}
    for key, value in load_file(adapter_dir / "adapter_model.safetensors").items():
        match = _LORA_KEY.fullmatch(key)
        if match is None:
            raise ExportError(f"the adapter holds {key}, which a GGUF LoRA adapter cannot")
        name = base.gguf_name(match["module"])
        parts.setdefault(name, {})[match["part"]] = value.astype(np.float32)
    target = adapter_dir / ADAPTER_FILE
    partial = target.with_name(target.name + ".partial")
    writer = gguf.GGUFWriter(partial, base.architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for name, pair in sorted(parts.items()):
        if set(pair) != {"A", "B"}:
            raise ExportError(f"the adapter's {name} lacks its A or B matrix")
        stem = name.removesuffix(".weight")
        writer.add_tensor(f"{stem}.weight.lora_a", pair["A"])  # rank x inputs
        writer.add_tensor(f"{stem}.weight.lora_b", base.reorder(name, pair["B"]))  # outputs x rank
    _write(writer, partial, target)
    return target


def export_model(
    model_dir: Path, base_gguf: Path, *, chat_template: str = "", matrices: str = "f16"
) -> Path:
    """Write the full fine-tune in ``model_dir`` (safetensors) as ``model_dir/model.gguf``: every
    tensor of ``base_gguf`` replaced by the trained one (matrices as ``matrices``, F16 by default
    as llama.cpp's converter writes them, or F32; norms as F32), the base file's metadata kept
    (its chat template replaced by ``chat_template``, the base version's own, when there is one);
    returns the file."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    base = _Base(base_gguf)
    trained: dict[str, Any] = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        for key, value in load_file(shard).items():
            if key.endswith(".weight"):
                trained[base.gguf_name(key.removesuffix(".weight"))] = value
            else:
                raise ExportError(f"the model holds {key}, which the base file has no place for")
    target = model_dir / MODEL_FILE
    partial = target.with_name(target.name + ".partial")
    writer = gguf.GGUFWriter(partial, base.architecture)
    for field in base.reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in (
            "general.architecture",
            "general.file_type",
        ):
            continue
        if field.name == gguf.Keys.Tokenizer.CHAT_TEMPLATE and chat_template:
            continue
        sub_type = field.types[1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), field.types[0], sub_type=sub_type)
    if chat_template:
        writer.add_chat_template(chat_template)
    if matrices not in ("f16", "f32"):
        raise ValueError(f"matrices must be f16 or f32, not {matrices}")
    matrix_dtype = np.float16 if matrices == "f16" else np.float32
    writer.add_file_type(
        gguf.LlamaFileType.MOSTLY_F16 if matrices == "f16" else gguf.LlamaFileType.ALL_F32
    )
    for tensor in base.reader.tensors:
        if tensor.name not in trained:
            raise ExportError(f"the trained model has no weights for {tensor.name}")
        weights = base.reorder(tensor.name, trained.pop(tensor.name))
        if tuple(reversed(weights.shape)) != tuple(int(n) for n in tensor.shape):
            raise ExportError(f"{tensor.name} has another shape than the base model's")
        writer.add_tensor(
            tensor.name, weights.astype(matrix_dtype if weights.ndim > 1 else np.float32)
        )
    # transformers names the tied output layer apart; the base file has only the embeddings.
    trained.pop("output.weight", None)
    if trained:
        raise ExportError(f"the base file has no place for {', '.join(sorted(trained))}")
    _write(writer, partial, target)
    return target


def _write(writer: Any, partial: Path, target: Path) -> None:
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(partial, target)
