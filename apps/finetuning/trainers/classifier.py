"""Training a text classifier (apps.inference.engines.classifier.EncoderClassifier) on a sentence
encoder: either the whole encoder is fine-tuned with the head ("full") or the encoder stays frozen
and only the head learns ("head")."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel, AutoTokenizer

from apps.core.errors import quoted
from apps.finetuning.datasets import DatasetInvalid, RowError
from apps.finetuning.schemas import Hyperparameters
from apps.inference.engines.classifier import EncoderClassifier
from apps.inference.engines.transformers_backend import pick_device, weights_location
from apps.inference.protocol import ModelSpec

from .common import EpochCallback, StepCallback, train_epochs


@dataclass(frozen=True)
class Example:
    line: int
    text: str
    input_ids: list[int]
    label: int


def batch_tensors(
    tokenizer: Any, rows: Sequence[Sequence[int]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id or 0
    ids = [list(r) + [pad] * (width - len(r)) for r in rows]
    mask = [[1] * len(r) + [0] * (width - len(r)) for r in rows]
    return torch.tensor(ids, device=device), torch.tensor(mask, device=device)


class ClassifierTrainer:
    def __init__(
        self,
        *,
        base: ModelSpec,
        method: str,
        hyperparameters: Hyperparameters,
        labels: Sequence[str],
        cache_dir: Path,
        device: str = "auto",
        threads: int = 0,
    ) -> None:
        self.base = base
        self.method = method
        self.hp = hyperparameters
        self.labels = list(labels)
        self.label_index = {label: i for i, label in enumerate(self.labels)}
        self.cache_dir = cache_dir
        self.device = pick_device(device)
        self.threads = threads
        self.tokenizer: Any = None
        self.model: Any = None
        # Longest input: the job's max_seq_length, but never more than the encoder can read.
        self.max_tokens = min(hyperparameters.max_seq_length, base.context_length)

    def load(self) -> None:
        if self.device.type == "cpu":
            torch.set_num_threads(self.threads or os.cpu_count() or 1)
        torch.manual_seed(self.hp.seed)
        location = weights_location(self.base, self.cache_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=False)
        encoder = AutoModel.from_pretrained(
            location, dtype=torch.float32, use_safetensors=True, trust_remote_code=False
        )
        self.model = EncoderClassifier(encoder, self.labels).to(self.device)
        if self.method == "head":
            for parameter in self.model.encoder.parameters():
                parameter.requires_grad = False

    def encode(
        self, rows: Sequence[dict[str, Any]], lines: Sequence[int], *, source: str
    ) -> list[Example]:
        """Tokenize rows; raise DatasetInvalid naming each row that is too long (never truncated)
        or carries a label the training data does not have."""
        examples, errors = [], []
        for row, line in zip(rows, lines, strict=True):
            ids = self.tokenizer(row["text"])["input_ids"]
            if len(ids) > self.max_tokens:
                errors.append(
                    RowError(
                        line,
                        f"{len(ids)} tokens, over the limit of {self.max_tokens}; shorten the "
                        "text (the encoder reads at most "
                        f"{self.base.context_length})",
                    )
                )
            elif row["label"] not in self.label_index:
                errors.append(
                    RowError(line, f"the label {quoted(row['label'])} is not in the training data")
                )
            else:
                examples.append(Example(line, row["text"], ids, self.label_index[row["label"]]))
        if errors:
            raise DatasetInvalid(f"{len(errors)} rows of the {source} cannot be used", errors)
        return examples

    def _logits(self, examples: Sequence[Example]) -> torch.Tensor:
        ids, mask = batch_tensors(self.tokenizer, [e.input_ids for e in examples], self.device)
        return self.model(ids, mask)

    def evaluate(self, examples: Sequence[Example]) -> tuple[float, float]:
        """Mean cross-entropy and accuracy over ``examples``."""
        self.model.eval()
        loss, correct = 0.0, 0
        with torch.inference_mode():
            for start in range(0, len(examples), 64):
                batch = examples[start : start + 64]
                logits = self._logits(batch)
                target = torch.tensor([e.label for e in batch], device=self.device)
                loss += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
                correct += int((logits.argmax(-1) == target).sum())
        return loss / max(len(examples), 1), correct / max(len(examples), 1)

    def predict(self, examples: Sequence[Example]) -> list[list[float]]:
        """Class probabilities per example, in ``labels`` order."""
        self.model.eval()
        scores: list[list[float]] = []
        with torch.inference_mode():
            for start in range(0, len(examples), 64):
                logits = self._logits(examples[start : start + 64]).float()
                scores.extend(torch.softmax(logits, dim=-1).tolist())
        return scores

    def total_steps(self, train: Sequence[Example]) -> int:
        return self.hp.n_epochs * math.ceil(len(train) / self.hp.batch_size)

    def fit(
        self, train: Sequence[Example], *, on_step: StepCallback, on_epoch: EpochCallback
    ) -> None:
        """Train; ``on_step`` runs after every optimizer step and may raise to stop at once."""

        def batch_loss(batch: list[Example]) -> torch.Tensor:
            target = torch.tensor([e.label for e in batch], device=self.device)
            return torch.nn.functional.cross_entropy(self._logits(batch), target)

        def begin_epoch() -> None:
            self.model.train()
            if self.method == "head":
                self.model.encoder.eval()  # frozen: no dropout either

        train_epochs(
            examples=train,
            hp=self.hp,
            params=[p for p in self.model.parameters() if p.requires_grad],
            learning_rate=self.hp.learning_rate_for("classification", self.method),
            weight_decay=0.01,
            batch_loss=batch_loss,
            on_step=on_step,
            on_epoch=on_epoch,
            begin_epoch=begin_epoch,
        )

    def save(self, target: Path) -> None:
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.model.save(tmp, self.tokenizer)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
