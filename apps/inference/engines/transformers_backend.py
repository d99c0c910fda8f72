"""The transformers backend: causal LMs from transformers' weights, on CPU or CUDA.

A hand-written decode loop (``batching.py``, ``decoder.py``) rather than ``generate`` lets requests
join and leave a running batch, and gives each step a point to notice an abort or a deadline and
to hold back text that may become a stop sequence. Weights load as safetensors only and never
with ``trust_remote_code``. A packaged GGUF file is dequantized once into a safetensors folder
under the model cache and loaded from there afterwards.
"""

from __future__ import annotations

import fcntl
import gc
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from apps.core.sources import local_folder, packaged_path
from apps.inference.protocol import ModelSpec

from .batching import BatchingEngine
from .decoder import EagerDecoder, LlamaDecoder, fbgemm_fp16_available, llama_unsupported
from .thread import Pacing

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(policy: str) -> torch.device:
    if policy == "cuda" or (policy == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def pick_dtype(policy: str, device: torch.device) -> torch.dtype:
    if policy != "auto":
        return _DTYPES[policy]
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def gguf_to_safetensors(gguf: Path, target: Path) -> Path:
    """Dequantize ``gguf`` into a safetensors folder at ``target`` once; later calls reuse it.

    Safe across processes: the conversion holds a file lock and publishes the folder by rename.
    """
    stamp = {"source": str(gguf), "size": gguf.stat().st_size}
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp_file = target / "playground-source.json"
        if stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp:
            return target
        logger.info("converting %s into %s (first load only)", gguf, target)
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model: Any = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        # The weights are dequantized now; drop the GGUF marker so save_pretrained accepts them.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "playground-source.json").write_text(json.dumps(stamp))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        return target


def weights_location(spec: ModelSpec, cache_dir: Path) -> str:
    """A folder (or hub id) holding safetensors weights for ``spec`` (an adapter's: its base's)."""
    if spec.source_kind == "adapter":
        assert spec.base is not None, "an adapter spec carries its base"
        return weights_location(spec.base, cache_dir)
    kind, source = spec.source_kind, spec.source
    if kind == "packaged":
        path = packaged_path(source)
        if path.suffix == ".gguf":
            folder = cache_dir / spec.key.replace("/", "_").replace("@", "--")
            return str(gguf_to_safetensors(path, folder))
        return str(path)
    if kind == "local":
        return str(safetensors_folder(source))
    return source  # a hub id, where the deployment can reach a hub


def safetensors_folder(source: str) -> Path:
    """The local folder ``source`` names, once it is known to lie under an allowed root and to
    hold safetensors weights (pickled ``.bin`` weights can run code as they load: refused)."""
    folder = local_folder(source)
    if not folder.is_dir():
        raise FileNotFoundError(f"{source} is not a folder")
    if not any(folder.glob("*.safetensors")):
        raise FileNotFoundError(
            f"{source} holds no .safetensors weights (other formats are refused)"
        )
    return folder


def revision_of(spec: ModelSpec) -> dict[str, str]:
    """``from_pretrained``'s revision argument for a hub version that pins one."""
    return {"revision": spec.revision} if spec.source_kind == "hub" and spec.revision else {}


def load_tokenizer(spec: ModelSpec, cache_dir: Path) -> Any:
    base = spec.base if spec.source_kind == "adapter" and spec.base else spec
    tokenizer = AutoTokenizer.from_pretrained(
        weights_location(spec, cache_dir), trust_remote_code=False, **revision_of(base)
    )
    if spec.chat_template:
        tokenizer.chat_template = spec.chat_template
    return tokenizer


def load_causal_lm(spec: ModelSpec, cache_dir: Path, *, dtype: torch.dtype) -> tuple[Any, Any]:
    """The tokenizer and model for ``spec``, safetensors only and never ``trust_remote_code``.

    An adapter version loads its base and merges the adapter's weights into it, so it serves
    as fast as the base does.
    """
    tokenizer = load_tokenizer(spec, cache_dir)
    base = spec.base if spec.source_kind == "adapter" and spec.base else spec
    model: Any = AutoModelForCausalLM.from_pretrained(
        weights_location(spec, cache_dir),
        dtype=dtype,
        use_safetensors=True,
        trust_remote_code=False,
        **revision_of(base),
    )
    if spec.source_kind == "adapter":
        from peft import PeftModel

        adapter = local_folder(spec.source)
        if not (adapter / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{spec.source} holds no adapter")
        if not (adapter / "adapter_model.safetensors").is_file():
            raise FileNotFoundError(
                f"{spec.source} holds no adapter_model.safetensors (other formats are refused)"
            )
        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
        model = model.merge_and_unload()
    return tokenizer, model


class TransformersEngine(BatchingEngine):
    """A causal LM from transformers' weights, serving many requests per forward pass.

    Llama-architecture models run on ``LlamaDecoder``; others on ``EagerDecoder``. On the CPU the
    weights are kept as packed float16 for fbgemm where it runs (dtype ``auto`` or ``float16``),
    else float32 or bfloat16 as asked; on a GPU in the chosen dtype.
    """

    name = "transformers"

    def __init__(
        self,
        spec: ModelSpec,
        *,
        cache_dir: Path,
        device: str = "auto",
        dtype: str = "auto",
        threads: int = 0,
        max_batch: int = 32,
        kv_budget_bytes: int = 2 << 30,
        pacing: Pacing | None = None,
    ) -> None:
        self.cache_dir = cache_dir
        self.device = pick_device(device)
        self.dtype_policy = dtype
        self.threads = threads
        self.weights = ""  # how the weights are held, once loaded (for logs and the bench)
        super().__init__(spec, max_batch=max_batch, kv_budget_bytes=kv_budget_bytes, pacing=pacing)

    def _load(self) -> None:
        cores = self.threads or os.cpu_count() or 1
        started = time.monotonic()
        on_cpu = self.device.type == "cpu"
        load_dtype = torch.float32 if on_cpu else pick_dtype(self.dtype_policy, self.device)
        self.tokenizer, model = load_causal_lm(self.spec, self.cache_dir, dtype=load_dtype)
        model = model.to(self.device).eval()
        parameters = sum(p.numel() for p in model.parameters())
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        self.eos_ids = eos_ids
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        unsupported = llama_unsupported(model)
        if unsupported is None:
            mode = self._weight_mode()
            if on_cpu:
                # fbgemm's fp16 GEMM runs on one thread whatever torch's setting; the decoder
                # spreads it over the cores itself (CoreSplit). More torch threads would only
                # spin-wait beside it. The setting is process-wide: see the README.
                torch.set_num_threads(1 if mode == "fbgemm-fp16" else cores)
            self.decoder = LlamaDecoder(
                model,
                max_positions=self.spec.context_length,
                device=self.device,
                mode=mode,
                cores=cores,
            )
            self.weights = f"llama decoder, {mode} weights"
            self.memory_bytes = parameters * (4 if mode == "float32" else 2)
        else:
            if on_cpu:
                torch.set_num_threads(cores)
            if on_cpu and self.dtype_policy in ("bfloat16", "float16"):
                model = model.to(_DTYPES[self.dtype_policy])
            self.decoder = EagerDecoder(model, device=self.device)
            self.weights = f"transformers forward ({unsupported}), {model.dtype}"
            self.memory_bytes = parameters * model.dtype.itemsize
        # The first forward pass pays for kernel selection; pay it here, not in a user's request.
        with torch.inference_mode():
            self.decoder.reserve(1, 16)
            self.decoder.prefill(0, [self.tokenizer.eos_token_id or 0] * 8)
            self.decoder.decode([0], [8])
        self.decoder.release()
        logger.info(
            "loaded %s on %s (%s) in %.1fs",
            self.spec.key,
            self.device,
            self.weights,
            time.monotonic() - started,
        )

    def _unload(self) -> None:
        super()._unload()
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _weight_mode(self) -> str:
        if self.device.type != "cpu":
            return "native"
        if self.dtype_policy in ("auto", "float16") and fbgemm_fp16_available():
            return "fbgemm-fp16"
        return "bfloat16" if self.dtype_policy == "bfloat16" else "float32"
