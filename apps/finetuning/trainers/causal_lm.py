"""Supervised fine-tuning of a causal language model: LoRA (peft) or full, in a plain torch loop.

A hand-written loop rather than transformers' ``Trainer`` gives every step a point at which the
job can report its figures, notice a cancel and stop, which is what the job page and the API need.
Only the assistant turns (chat rows) or the completion (prompt rows) are learned: every other
token's label is -100.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from apps.finetuning.datasets import CHAT, DatasetInvalid, RowError
from apps.finetuning.schemas import Hyperparameters
from apps.inference.engines.transformers_backend import load_causal_lm, pick_device
from apps.inference.protocol import ModelSpec

from .common import EpochCallback, StepCallback, train_epochs

logger = logging.getLogger(__name__)

IGNORE = -100
SAMPLE_MAX_NEW_TOKENS = 64


@dataclass(frozen=True)
class Example:
    line: int
    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


def encode_row(tokenizer: Any, row: dict[str, Any], fmt: str) -> tuple[list[int], list[int]]:
    """Token ids and labels of one validated row (labels: -100 except what the model learns)."""
    if fmt != CHAT:
        prompt = tokenizer(row["prompt"])["input_ids"]
        completion = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
        completion = [*completion, tokenizer.eos_token_id]
        return [*prompt, *completion], [IGNORE] * len(prompt) + completion

    def ids(messages: list[dict[str, str]], *, prompt: bool) -> list[int]:
        encoded = tokenizer.apply_chat_template(
            messages, add_generation_prompt=prompt, tokenize=True, return_dict=True
        )
        return list(encoded["input_ids"])

    messages = row["messages"]
    input_ids = ids(messages, prompt=False)
    labels = [IGNORE] * len(input_ids)
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        # The answer's tokens: what the template adds for this turn after the generation prompt.
        start = len(ids(messages[:index], prompt=True))
        end = len(ids(messages[: index + 1], prompt=False))
        labels[start:end] = input_ids[start:end]
    return input_ids, labels


def render_row(tokenizer: Any, row: dict[str, Any], fmt: str) -> str:
    """The text the model is trained on for one row, special tokens included (for previews)."""
    if fmt == CHAT:
        return str(tokenizer.apply_chat_template(row["messages"], tokenize=False))
    return f"{row['prompt']}{row['completion']}{tokenizer.eos_token or ''}"


def prompt_of(row: dict[str, Any], fmt: str) -> tuple[Any, str]:
    """A held-out row as (what the model is asked, the answer the data expects)."""
    if fmt == CHAT:
        return row["messages"][:-1], row["messages"][-1]["content"]
    return row["prompt"], row["completion"]


class CausalLMTrainer:
    def __init__(
        self,
        *,
        base: ModelSpec,
        method: str,
        hyperparameters: Hyperparameters,
        cache_dir: Path,
        device: str = "auto",
        threads: int = 0,
    ) -> None:
        self.base = base
        self.method = method
        self.hp = hyperparameters
        self.cache_dir = cache_dir
        self.device = pick_device(device)
        self.threads = threads
        self.tokenizer: Any = None
        self.model: Any = None

    def load(self) -> None:
        """The base model in float32 (the weights being trained), with LoRA layers for "lora"."""
        if self.device.type == "cpu":
            torch.set_num_threads(self.threads or os.cpu_count() or 1)
        torch.manual_seed(self.hp.seed)
        self.tokenizer, model = load_causal_lm(self.base, self.cache_dir, dtype=torch.float32)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = model.to(self.device)

    def add_adapter(self) -> None:
        """Wrap the model in LoRA layers (their B matrices start at zero: the model is unchanged)."""
        if self.method != "lora":
            return
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            task_type="CAUSAL_LM",
            r=self.hp.lora_rank,
            lora_alpha=self.hp.lora_alpha,
            lora_dropout=0.0,
            target_modules=[
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ],
        )
        self.model = get_peft_model(self.model, config)

    def encode(
        self, rows: Sequence[dict[str, Any]], lines: Sequence[int], fmt: str, *, source: str
    ) -> list[Example]:
        """Tokenize rows; raise DatasetInvalid naming each row over ``max_seq_length`` (rows are
        never truncated) or with nothing to learn."""
        examples, errors = [], []
        for row, line in zip(rows, lines, strict=True):
            input_ids, labels = encode_row(self.tokenizer, row, fmt)
            if len(input_ids) > self.hp.max_seq_length:
                errors.append(
                    RowError(
                        line,
                        f"{len(input_ids)} tokens, over max_seq_length "
                        f"({self.hp.max_seq_length}); shorten it or raise max_seq_length",
                    )
                )
                continue
            example = Example(line, input_ids, labels)
            if not example.trained_tokens:
                errors.append(RowError(line, "no answer tokens to learn from"))
                continue
            examples.append(example)
        if errors:
            raise DatasetInvalid(f"{len(errors)} rows of the {source} cannot be trained on", errors)
        return examples

    def _batch(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        width = max(len(e.input_ids) for e in examples)
        pad = self.tokenizer.pad_token_id
        ids = [e.input_ids + [pad] * (width - len(e.input_ids)) for e in examples]
        labels = [e.labels + [IGNORE] * (width - len(e.labels)) for e in examples]
        mask = [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in examples]
        return {
            "input_ids": torch.tensor(ids, device=self.device),
            "labels": torch.tensor(labels, device=self.device),
            "attention_mask": torch.tensor(mask, device=self.device),
        }

    def _loss_sum(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        logits = self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits[:, :-1]
        targets = batch["labels"][:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            targets.reshape(-1),
            ignore_index=IGNORE,
            reduction="sum",
        )
        return loss, int((targets != IGNORE).sum())

    def evaluate(self, examples: Sequence[Example]) -> float:
        """Mean loss per learned token over ``examples`` (perplexity is its exponential)."""
        self.model.eval()
        total, count = 0.0, 0
        with torch.inference_mode():
            for start in range(0, len(examples), self.hp.batch_size):
                loss, n = self._loss_sum(self._batch(examples[start : start + self.hp.batch_size]))
                total, count = total + float(loss), count + n
        return total / max(count, 1)

    def total_steps(self, train: Sequence[Example]) -> int:
        return self.hp.n_epochs * math.ceil(len(train) / self.hp.batch_size)

    def fit(
        self,
        train: Sequence[Example],
        *,
        on_step: StepCallback,
        on_epoch: EpochCallback,
    ) -> None:
        """Train; ``on_step`` runs after every optimizer step and may raise to stop at once."""

        def batch_loss(batch: list[Example]) -> torch.Tensor:
            loss_sum, count = self._loss_sum(self._batch(batch))
            return loss_sum / max(count, 1)

        train_epochs(
            examples=train,
            hp=self.hp,
            params=[p for p in self.model.parameters() if p.requires_grad],
            learning_rate=self.hp.learning_rate_for("chat", self.method),
            weight_decay=0.0,
            batch_loss=batch_loss,
            on_step=on_step,
            on_epoch=on_epoch,
            begin_epoch=self.model.train,
        )

    def answer(self, prompts: Sequence[Any]) -> list[str]:
        """Greedy answers (chat messages or raw prompts), as the sample table shows them."""
        self.model.eval()
        answers = []
        with torch.inference_mode():
            for prompt in prompts:
                if isinstance(prompt, list):
                    ids = self.tokenizer.apply_chat_template(
                        prompt, add_generation_prompt=True, tokenize=True, return_dict=True
                    )["input_ids"]
                else:
                    ids = self.tokenizer(prompt)["input_ids"]
                inputs = torch.tensor([list(ids)], device=self.device)
                output = self.model.generate(
                    input_ids=inputs,
                    attention_mask=torch.ones_like(inputs),
                    max_new_tokens=SAMPLE_MAX_NEW_TOKENS,
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
                answers.append(
                    self.tokenizer.decode(output[0, inputs.shape[1] :], skip_special_tokens=True)
                )
        return answers

    def save(self, target: Path) -> None:
        """Write the adapter (LoRA) or the whole model (full) as safetensors into ``target``."""
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.model.save_pretrained(tmp, safe_serialization=True)
        self.tokenizer.save_pretrained(tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)


_tokenizers: dict[ModelSpec, Any] = {}


def tokenizer_for(spec: ModelSpec, cache_dir: Path) -> Any:
    """The tokenizer of ``spec``, loaded once per process (for counting and previews)."""
    from apps.inference.engines.transformers_backend import load_tokenizer

    if spec not in _tokenizers:
        _tokenizers[spec] = load_tokenizer(spec, cache_dir)
    return _tokenizers[spec]
