"""Sentence embeddings with a transformers encoder: mean pooling over tokens, then L2 normalising
(the recipe of all-MiniLM-L6-v2's sentence-transformers config, without that package).

Requests are short and batched by the caller, so one lock serialises them instead of a scheduler.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from apps.core.errors import ErrorCode
from apps.inference.protocol import EngineError, ModelSpec

from .transformers_backend import packaged_path, pick_device, revision_of, safetensors_folder


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


@dataclass(frozen=True)
class Embedded:
    vectors: np.ndarray  # float32, one row per input, unit length
    tokens: int


class TransformersEmbedder:
    name = "embeddings"

    def __init__(self, spec: ModelSpec, *, device: str = "auto", threads: int = 0) -> None:
        self.spec = spec
        self.device = pick_device(device)
        self._lock = threading.Lock()
        # torch's thread count is process-wide and the chat engine sets it (see
        # TransformersEngine._load); an encoder in the same worker leaves it as it finds it.
        if spec.source_kind == "packaged":
            location = str(packaged_path(spec.source))
        elif spec.source_kind == "local":
            location = str(safetensors_folder(spec.source))
        else:
            location = spec.source
        self.tokenizer: Any = AutoTokenizer.from_pretrained(
            location, trust_remote_code=False, **revision_of(spec)
        )
        model: Any = AutoModel.from_pretrained(
            location, use_safetensors=True, trust_remote_code=False, **revision_of(spec)
        )
        self.model = model.to(self.device).eval()
        self.memory_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())

    def close(self) -> None:
        """Unload. Precondition: no call is running (the registry closes only idle encoders)."""
        with self._lock:
            self.model = None

    def check_health(self) -> None:
        pass

    def embed(self, texts: list[str]) -> Embedded | EngineError:
        """Embed ``texts``; an input longer than the context is an error, never truncated."""
        with self._lock:
            encoded = encode_within_context(self.tokenizer, texts, self.spec.context_length)
            if isinstance(encoded, EngineError):
                return encoded
            lengths = encoded["attention_mask"].sum(dim=1)
            encoded = {k: v.to(self.device) for k, v in encoded.items()}
            with torch.inference_mode():
                hidden = self.model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            vectors = torch.nn.functional.normalize(pooled, p=2, dim=1)
            return Embedded(vectors.float().cpu().numpy(), int(lengths.sum()))
