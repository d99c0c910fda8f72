"""What differs between the kinds of fine-tuning job, around the one orchestration in
``runner.py``: a chat model's LoRA or full fine-tune (``ChatRecipe``) and a text classifier on a
sentence encoder (``ClassifierRecipe``).

A recipe splits the rows and builds its trainer (``prepare``), does what comes before training
(``before_training``), gives the figures of each epoch (``epoch_figures``), and the evaluation the
job keeps once training is done (``evaluation``). The runner loads, checks, logs, trains with the
shared loop, saves and deploys.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from django.conf import settings

from apps.catalog.selectors import version_spec

from .datasets import DatasetInvalid, ParsedDataset, holdout_split, stratified_split
from .models import FineTuningJob, JobEvent
from .schemas import Hyperparameters
from .services import job_event_add

logger = logging.getLogger(__name__)

SAMPLE_PROMPTS = 4  # validation prompts answered before and after a chat fine-tune

# A summary of the encoded splits: (message, data) for the job's log.
Summary = tuple[str, dict[str, Any]]


class Recipe:
    trainer: Any

    def __init__(
        self,
        job: FineTuningJob,
        hp: Hyperparameters,
        parsed: ParsedDataset,
        validation: ParsedDataset | None,
    ) -> None:
        self.job, self.hp, self.parsed, self.validation = job, hp, parsed, validation
        self.trainer_options: dict[str, Any] = {
            "base": version_spec(job.base_version),
            "method": job.method,
            "hyperparameters": hp,
            "cache_dir": settings.MODEL_CACHE_DIR,
            "device": settings.INFERENCE_DEVICE,
            "threads": settings.INFERENCE_THREADS,
        }

    def prepare(self) -> tuple[list[Any], list[Any], Summary]:
        """Split the rows, load the trainer, encode the splits: (train, validation, summary)."""
        raise NotImplementedError

    def before_training(self) -> None:
        """What must happen between encoding and the first step (may raise DatasetInvalid)."""

    def epoch_figures(self, val: list[Any], epoch: int, step: int) -> Summary | None:
        """The figures of the epoch just ended, for the log (None: nothing to report)."""
        raise NotImplementedError

    def evaluation(self) -> dict[str, Any]:
        """What the job keeps of how the result does (``FineTuningJob.evaluation``)."""
        raise NotImplementedError


class ChatRecipe(Recipe):
    """A chat model: validation loss before and after, and a few held-out prompts answered by the
    base model and by the result."""

    def prepare(self) -> tuple[list[Any], list[Any], Summary]:
        from .trainers.causal_lm import CausalLMTrainer, prompt_of

        fmt = self.parsed.format
        train_rows, val_rows = holdout_split(
            self.parsed, self.validation, self.hp.validation_fraction, self.hp.seed
        )
        self.trainer = CausalLMTrainer(**self.trainer_options)
        self.trainer.load()
        train = self.trainer.encode(train_rows.rows, train_rows.lines, fmt, source="training data")
        self.val = self.trainer.encode(val_rows.rows, val_rows.lines, fmt, source="validation data")
        self.samples = [prompt_of(row, fmt) for row in val_rows.rows[:SAMPLE_PROMPTS]]
        self.figures: dict[str, Any] = {}
        learned = sum(e.trained_tokens for e in train)
        return (
            train,
            self.val,
            (
                f"{len(train)} training rows ({learned} answer tokens to learn), "
                f"{len(self.val)} validation rows",
                {
                    "train_rows": len(train),
                    "validation_rows": len(self.val),
                    "answer_tokens": learned,
                },
            ),
        )

    def before_training(self) -> None:
        if self.val:
            loss = self.trainer.evaluate(self.val)
            self.figures["base"] = {"loss": loss, "perplexity": math.exp(loss)}
            job_event_add(
                self.job,
                JobEvent.Kind.EVAL,
                f"Base model: validation loss {loss:.4f}",
                {"step": 0, "val_loss": loss, "perplexity": math.exp(loss)},
            )
        self.base_answers = self.trainer.answer([prompt for prompt, _ in self.samples])
        self.trainer.add_adapter()

    def epoch_figures(self, val: list[Any], epoch: int, step: int) -> Summary | None:
        if not val:
            return None
        loss = self.trainer.evaluate(val)
        self.figures["tuned"] = {"loss": loss, "perplexity": math.exp(loss)}
        return (
            f"Epoch {epoch}: validation loss {loss:.4f}",
            {"step": step, "epoch": epoch, "val_loss": loss, "perplexity": math.exp(loss)},
        )

    def evaluation(self) -> dict[str, Any]:
        tuned_answers = self.trainer.answer([prompt for prompt, _ in self.samples])
        samples = [
            {"prompt": _prompt_text(prompt), "expected": expected, "base": base, "tuned": tuned}
            for (prompt, expected), base, tuned in zip(
                self.samples, self.base_answers, tuned_answers, strict=True
            )
        ]
        return {**self.figures, "samples": samples}


class ClassifierRecipe(Recipe):
    """A sentence encoder with a trained head: validation loss and accuracy per epoch, then the
    held-out test split scored against two baselines (the majority class, TF-IDF with logistic
    regression)."""

    def prepare(self) -> tuple[list[Any], list[Any], Summary]:
        from .trainers.classifier import ClassifierTrainer

        hp = self.hp
        if self.validation is None:
            train_rows, test_rows, val_rows = stratified_split(
                self.parsed, (hp.test_fraction, hp.validation_fraction), hp.seed
            )
        else:
            train_rows, test_rows = stratified_split(self.parsed, (hp.test_fraction,), hp.seed)
            val_rows = self.validation
        self.train_rows = train_rows
        self.labels = labels = sorted(self.parsed.label_counts)
        self.trainer = ClassifierTrainer(labels=labels, **self.trainer_options)
        self.trainer.load()
        self.train = self.trainer.encode(train_rows.rows, train_rows.lines, source="training data")
        val = self.trainer.encode(val_rows.rows, val_rows.lines, source="validation data")
        self.test = self.trainer.encode(test_rows.rows, test_rows.lines, source="test split")
        self.splits = {"train": len(self.train), "validation": len(val), "test": len(self.test)}
        return (
            self.train,
            val,
            (
                f"{len(labels)} labels; {len(self.train)} training, {len(val)} validation and "
                f"{len(self.test)} test rows, split by label",
                {"labels": labels, **self.splits},
            ),
        )

    def before_training(self) -> None:
        if not self.test:
            raise DatasetInvalid(
                "The test split is empty: upload more rows or raise test_fraction."
            )

    def epoch_figures(self, val: list[Any], epoch: int, step: int) -> Summary | None:
        if not val:
            return None
        loss, accuracy = self.trainer.evaluate(val)
        return (
            f"Epoch {epoch}: validation loss {loss:.4f}, accuracy {accuracy:.3f}",
            {"step": step, "epoch": epoch, "val_loss": loss, "val_accuracy": accuracy},
        )

    def evaluation(self) -> dict[str, Any]:
        from .scores import classification_metrics, majority_baseline, tfidf_logreg_baseline

        labels, test, train = self.labels, self.test, self.train
        scores = self.trainer.predict(test)
        truth = [labels[e.label] for e in test]
        predicted = [labels[max(range(len(labels)), key=row.__getitem__)] for row in scores]
        majority = majority_baseline([row["label"] for row in self.train_rows.rows])
        try:
            tfidf: list[str] | None = tfidf_logreg_baseline(
                [e.text for e in train],
                [labels[e.label] for e in train],
                [e.text for e in test],
                self.hp.seed,
            )
        except ValueError as exc:  # e.g. no word in any text ("empty vocabulary")
            logger.warning("job %s: no TF-IDF baseline: %s", self.job.pk, exc)
            tfidf = None
        mine = classification_metrics(truth, predicted, labels)
        baselines: dict[str, Any] = {
            "majority": {
                "label": majority,
                **classification_metrics(truth, [majority] * len(test), labels),
            },
            "tfidf_logreg": classification_metrics(truth, tfidf, labels) if tfidf else None,
        }
        job_event_add(
            self.job,
            JobEvent.Kind.EVAL,
            f"Test split: accuracy {mine['accuracy']:.3f}, macro F1 {mine['macro_f1']:.3f} "
            f"(majority class {baselines['majority']['accuracy']:.3f}"
            + (
                f", TF-IDF + logistic regression {baselines['tfidf_logreg']['accuracy']:.3f})"
                if baselines["tfidf_logreg"]
                else "; no TF-IDF baseline: the texts have no words it can use)"
            ),
            {"test_accuracy": mine["accuracy"], "test_macro_f1": mine["macro_f1"]},
        )
        return {
            "labels": labels,
            "splits": self.splits,
            "test": mine,
            "baselines": baselines,
            "predictions": [
                {
                    "line": e.line,
                    "text": e.text,
                    "label": t,
                    "predicted": p,
                    "scores": dict(zip(labels, row, strict=True)),
                }
                for e, t, p, row in zip(test, truth, predicted, scores, strict=True)
            ],
        }


RECIPES: dict[str, type[Recipe]] = {
    FineTuningJob.Kind.CHAT: ChatRecipe,
    FineTuningJob.Kind.CLASSIFICATION: ClassifierRecipe,
}


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, list):
        return "\n\n".join(m["content"] for m in prompt if m["role"] != "system")
    return str(prompt)
