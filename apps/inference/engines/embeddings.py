"""Sentence embeddings with a transformers encoder: mean pooling over tokens, then L2 normalising
(the recipe of all-MiniLM-L6-v2's sentence-transformers config, without that package)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from apps.core.sources import packaged_path
from apps.inference.protocol import EngineError

from .encoder import EncoderServer
from .transformers_backend import revision_of, safetensors_folder


@dataclass(frozen=True)
class Embedded:
    vectors: np.ndarray  # float32, one row per input, unit length
    tokens: int


class TransformersEmbedder(EncoderServer):
    name = "embeddings"

    def _load(self) -> tuple[Any, Any]:
        spec = self.spec
        if spec.source_kind == "packaged":
            location = str(packaged_path(spec.source))
        elif spec.source_kind == "local":
            location = str(safetensors_folder(spec.source))
        else:
            location = spec.source
        tokenizer = AutoTokenizer.from_pretrained(
            location, trust_remote_code=False, **revision_of(spec)
        )
        pinned: dict[str, Any] = revision_of(spec)  # transformers 5.25 types each keyword apart
        model = AutoModel.from_pretrained(
            location, use_safetensors=True, trust_remote_code=False, **pinned
        )
        return tokenizer, model

    def embed(self, texts: list[str]) -> Embedded | EngineError:
        """Embed ``texts``; an input longer than the context is an error, never truncated."""
        with self._lock:
            encoded = self._encode(texts)
            if isinstance(encoded, EngineError):
                return encoded
            with torch.inference_mode():
                hidden = self.model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            vectors = torch.nn.functional.normalize(pooled, p=2, dim=1)
            tokens = int(encoded["attention_mask"].sum())
            return Embedded(vectors.float().cpu().numpy(), tokens)
