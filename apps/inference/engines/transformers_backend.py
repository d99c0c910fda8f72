"""The transformers backend: one causal LM on CPU or CUDA, decoded token by token.

A hand-written decode loop (forward with a KV cache, then sampling) rather than ``generate`` gives
each step a point to notice an abort or a deadline and to hold back text that may become a stop
sequence. Weights load as safetensors only and never with ``trust_remote_code``. A packaged GGUF file
is dequantized once into a safetensors folder under the model cache and loaded from there afterwards.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from apps.core.errors import ErrorCode
from apps.inference.protocol import (
    EngineError,
    Finished,
    GenerationRequest,
    ModelSpec,
    SamplingParams,
    TokenDelta,
)

from .scheduler import Emit, QueuedEngine, StopRequested
from .text import StopTextTracker

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


def packaged_path(source: str) -> Path:
    """``"<package>/<relative path>"`` to a file inside an installed package, without importing it."""
    package, _, relative = source.partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {package!r} is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    return path


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
    if kind == "local" and not Path(source).is_dir():
        raise FileNotFoundError(f"{source} is not a folder")
    return source  # a local folder, or a hub id where the deployment can reach a hub


def load_tokenizer(spec: ModelSpec, cache_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(weights_location(spec, cache_dir), trust_remote_code=False)


def load_causal_lm(spec: ModelSpec, cache_dir: Path, *, dtype: torch.dtype) -> tuple[Any, Any]:
    """The tokenizer and model for ``spec``, safetensors only and never ``trust_remote_code``.

    An adapter version loads its base and merges the adapter's weights into it, so it serves
    as fast as the base does.
    """
    location = weights_location(spec, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=False)
    model: Any = AutoModelForCausalLM.from_pretrained(
        location, dtype=dtype, use_safetensors=True, trust_remote_code=False
    )
    if spec.source_kind == "adapter":
        from peft import PeftModel

        if not (Path(spec.source) / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{spec.source} holds no adapter")
        model = PeftModel.from_pretrained(model, spec.source, is_trainable=False)
        model = model.merge_and_unload()
    return tokenizer, model


class TransformersEngine(QueuedEngine):
    name = "transformers"

    def __init__(
        self,
        spec: ModelSpec,
        *,
        cache_dir: Path,
        device: str = "auto",
        dtype: str = "auto",
        threads: int = 0,
    ) -> None:
        self.spec = spec
        self.cache_dir = cache_dir
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.threads = threads
        self.model: Any = None
        self.tokenizer: Any = None
        super().__init__()

    # -- loading ---------------------------------------------------------------------------
    def _load(self) -> None:
        if self.device.type == "cpu":
            torch.set_num_threads(self.threads or os.cpu_count() or 1)
        started = time.monotonic()
        self.tokenizer, model = load_causal_lm(self.spec, self.cache_dir, dtype=self.dtype)
        self.model = model.to(self.device)
        self.model.eval()
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        self.eos_ids = eos_ids
        # The first forward pass pays for kernel selection; pay it here, not in a user's request.
        with torch.inference_mode():
            warmup = [self.tokenizer.eos_token_id or 0] * 8
            self.model(input_ids=torch.tensor([warmup], device=self.device))
        logger.info(
            "loaded %s on %s as %s in %.1fs",
            self.spec.key,
            self.device,
            self.dtype,
            time.monotonic() - started,
        )

    # -- serving ---------------------------------------------------------------------------
    def _prompt_ids(self, request: GenerationRequest) -> list[int]:
        if request.messages is not None:
            encoded = self.tokenizer.apply_chat_template(
                request.messages, add_generation_prompt=True, tokenize=True, return_dict=True
            )
            return list(encoded["input_ids"])
        return list(self.tokenizer(request.prompt or "")["input_ids"])

    def _serve(self, request: GenerationRequest, emit: Emit, check: Callable[[], None]) -> None:
        params = request.params
        prompt_ids = self._prompt_ids(request)
        if not prompt_ids:
            emit(EngineError(ErrorCode.INVALID_PARAMETER, "The prompt is empty."))
            return
        if len(prompt_ids) + params.max_tokens > self.spec.context_length:
            emit(
                EngineError(
                    ErrorCode.CONTEXT_LENGTH_EXCEEDED,
                    f"The prompt has {len(prompt_ids)} tokens and max_tokens is {params.max_tokens}; "
                    f"together they exceed the model's context of {self.spec.context_length} tokens. "
                    "Shorten the conversation or lower max_tokens.",
                )
            )
            return
        generator = torch.Generator(device=self.device)
        generator.manual_seed(
            params.seed if params.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
        )
        tracker = StopTextTracker(params.stop)
        generated: list[int] = []
        seen = set(prompt_ids)  # for the repetition penalty
        cache = DynamicCache(config=self.model.config)
        step_input = torch.tensor([prompt_ids], device=self.device)
        reason = "length"
        forwarded = False  # a request stopped before its first step used no tokens
        try:
            with torch.inference_mode():
                for _ in range(params.max_tokens):
                    check()
                    forwarded = True
                    logits = (
                        self.model(input_ids=step_input, past_key_values=cache, use_cache=True)
                        .logits[0, -1]
                        .float()
                    )
                    token = sample(logits, params, seen, generator)
                    if token in self.eos_ids:
                        reason = "stop"
                        break
                    generated.append(token)
                    seen.add(token)
                    text = self.tokenizer.decode(generated, skip_special_tokens=True)
                    new = tracker.update(text)
                    if new:
                        emit(TokenDelta(new, 1))
                    if tracker.stopped:
                        reason = "stop"
                        break
                    step_input = torch.tensor([[token]], device=self.device)
        except StopRequested as stop:
            reason = stop.reason
        if not tracker.stopped:
            tail = tracker.update(tracker.text, final=True)
            if tail:
                emit(TokenDelta(tail, 0))
        prompt_tokens = len(prompt_ids) if forwarded else 0
        emit(Finished(reason, prompt_tokens, len(generated)))  # type: ignore[arg-type]


def sample(
    logits: torch.Tensor, params: SamplingParams, seen: set[int], generator: torch.Generator
) -> int:
    """Pick the next token: repetition penalty over the ``seen`` ids (prompt and output), then
    greedy or temperature/top-k/top-p sampling."""
    if params.repetition_penalty != 1.0:
        ids = torch.tensor(sorted(seen), device=logits.device)
        picked = logits[ids]
        logits[ids] = torch.where(
            picked > 0, picked / params.repetition_penalty, picked * params.repetition_penalty
        )
    if params.temperature == 0.0:
        return int(torch.argmax(logits))
    logits = logits / params.temperature
    if params.top_k:
        kth = torch.topk(logits, min(params.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) > params.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(0, order, sorted_logits)
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
