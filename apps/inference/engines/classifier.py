"""Serving a text classifier that a fine-tuning job trained: a sentence encoder, mean pooling over
its token states, then one linear layer (apps.finetuning.trainers.classifier trains it).

On disk a classifier is a folder: the encoder as a transformers model (safetensors), the head in
``classifier.safetensors`` and the labels in ``classifier.json``. Requests are short and batched by
the caller, so one lock serialises them, as for embeddings (``encoder.EncoderServer``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer

from apps.core.sources import local_folder
from apps.inference.protocol import EngineError

from .encoder import EncoderServer

HEAD_FILE = "classifier.safetensors"
LABELS_FILE = "classifier.json"


class EncoderClassifier(torch.nn.Module):
    def __init__(self, encoder: Any, labels: Sequence[str]) -> None:
        super().__init__()
        self.encoder = encoder
        self.labels = list(labels)
        self.head = torch.nn.Linear(encoder.config.hidden_size, len(labels))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return self.head(pooled)

    def save(self, folder: Path, tokenizer: Any) -> None:
        self.encoder.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        save_file(
            {k: v.contiguous() for k, v in self.head.state_dict().items()}, folder / HEAD_FILE
        )
        (folder / LABELS_FILE).write_text(json.dumps({"labels": self.labels, "pooling": "mean"}))

    @classmethod
    def load(cls, folder: str | Path, *, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
        """The tokenizer and classifier saved in ``folder`` (safetensors only, no remote code)."""
        folder = Path(folder)
        labels = json.loads((folder / LABELS_FILE).read_text())["labels"]
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        encoder = AutoModel.from_pretrained(
            folder, dtype=dtype, use_safetensors=True, trust_remote_code=False
        )
        model = cls(encoder, labels)
        model.head.load_state_dict(load_file(folder / HEAD_FILE))
        return tokenizer, model.to(dtype)


@dataclass(frozen=True)
class Classified:
    scores: list[dict[str, float]]  # per input: probability of each label, labels in model order
    tokens: int

    @property
    def labels(self) -> list[str]:
        return [max(row, key=row.__getitem__) for row in self.scores]


class TransformersClassifier(EncoderServer):
    name = "classifier"

    def _load(self) -> tuple[Any, Any]:
        folder = local_folder(self.spec.source)
        if not (folder / LABELS_FILE).is_file():
            raise FileNotFoundError(f"{self.spec.source} holds no classifier")
        return EncoderClassifier.load(folder)

    def classify(self, texts: list[str]) -> Classified | EngineError:
        """Label ``texts``; an input longer than the context is an error, never truncated."""
        with self._lock:
            encoded = self._encode(texts)
            if isinstance(encoded, EngineError):
                return encoded
            with torch.inference_mode():
                logits = self.model(encoded["input_ids"], encoded["attention_mask"])
            probabilities = torch.softmax(logits.float(), dim=-1).cpu().tolist()
            labels = self.model.labels
            scores = [dict(zip(labels, row, strict=True)) for row in probabilities]
            return Classified(scores, int(encoded["attention_mask"].sum()))
