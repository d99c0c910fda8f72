"""What the two encoder servers share (sentence embeddings, text classification): loading in the
constructor, one lock that serialises calls (requests are short and batched by the caller, so no
scheduler), unloading, and encoding a batch of texts without ever truncating one."""

from __future__ import annotations

import threading
from typing import Any

import torch

from apps.core.errors import ErrorCode
from apps.inference.protocol import EngineError, ModelSpec

from .transformers_backend import pick_device


def encode_within_context(
    tokenizer: Any, texts: list[str], context_length: int
) -> dict[str, torch.Tensor] | EngineError:
    """``texts`` tokenized and padded into one batch, or an error naming the first text longer
    than ``context_length`` tokens (texts are never truncated)."""
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    for index, length in enumerate(encoded["attention_mask"].sum(dim=1).tolist()):
        if length > context_length:
            return EngineError(
                ErrorCode.CONTEXT_LENGTH_EXCEEDED,
                f"Input {index} has {length} tokens; the model reads at most {context_length}. "
                "Shorten it or split it.",
            )
    return dict(encoded)


class EncoderServer:
    """A transformers encoder loaded at construction (``_load`` returns its tokenizer and
    model). torch's thread count is process-wide and the chat engine sets it (see
    ``TransformersEngine._load``); an encoder in the same worker leaves it as it finds it."""

    name = "encoder"

    def __init__(self, spec: ModelSpec, *, device: str = "auto", threads: int = 0) -> None:
        self.spec = spec
        self.device = pick_device(device)
        self._lock = threading.Lock()
        self.tokenizer, model = self._load()
        self.model: Any = model.to(self.device).eval()
        self.memory_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())

    def _load(self) -> tuple[Any, Any]:
        raise NotImplementedError

    @property
    def loaded(self) -> bool:
        return True  # loading happens in the constructor

    def wait_loaded(self, timeout: float | None = None) -> None:
        pass

    def check_health(self) -> None:
        if self.model is None:
            raise RuntimeError("the model was unloaded")

    def close(self) -> None:
        """Unload. Precondition: no call is running (the registry closes only idle encoders)."""
        with self._lock:
            self.model = None

    def _encode(self, texts: list[str]) -> dict[str, torch.Tensor] | EngineError:
        """``texts`` as a batch on the model's device, or the error of one over the context."""
        encoded = encode_within_context(self.tokenizer, texts, self.spec.context_length)
        if isinstance(encoded, EngineError):
            return encoded
        return {k: v.to(self.device) for k, v in encoded.items()}
