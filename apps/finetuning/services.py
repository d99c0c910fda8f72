"""Datasets and fine-tuning jobs: creating and cancelling them (web), running them (training
worker), and failing the jobs whose worker is gone (any process, see ``finetune_jobs_reap``)."""

from __future__ import annotations

import copy
import logging
import math
import random
import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import connection, transaction
from django.db.models import F, ProtectedError
from django.utils import timezone

from apps.accounts.models import User
from apps.catalog.models import LanguageModel, ModelVersion
from apps.catalog.selectors import DEFAULT_CHAT_MODEL, DEFAULT_CLASSIFIER_BASE
from apps.core.errors import ErrorCode, ServiceError
from apps.core.queues import enqueue_on_commit, requeue_stale
from apps.inference.engines import import_backends
from apps.inference.services import model_spec

from .datasets import CLASSIFICATION, DatasetInvalid, ParsedDataset, parse_dataset
from .models import Dataset, FineTuningJob, JobEvent
from .schemas import Hyperparameters
from .streaming import publish_event

logger = logging.getLogger(__name__)

Status = FineTuningJob.Status
SAMPLE_PROMPTS = 4


class JobStopped(Exception):
    def __init__(self, status: str, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# -- datasets ------------------------------------------------------------------------------------
def dataset_create(*, owner: User, filename: str, data: bytes) -> Dataset:
    """Validate and store an uploaded JSONL file; raise DatasetInvalid (nothing stored) when any
    row is bad. A worker counts its tokens and renders a preview once the transaction commits."""
    from .tasks import analyze_dataset

    parsed = parse_dataset(data)
    with transaction.atomic():
        dataset = Dataset(
            owner=owner,
            filename=Path(filename).name[:255] or "dataset.jsonl",
            format=parsed.format,
            bytes=len(data),
            rows=len(parsed.rows),
            label_counts=parsed.label_counts if parsed.format == CLASSIFICATION else {},
        )
        extension = "csv" if parsed.is_csv else "jsonl"
        dataset.file.save(f"upload.{extension}", ContentFile(data), save=False)
        try:
            dataset.save()
        except Exception:
            dataset.file.delete(save=False)
            raise
        enqueue_on_commit(analyze_dataset, dataset.pk)
    return dataset


# The tokenizer that counts a dataset's tokens: the model its rows are most likely trained on.
ANALYSIS_MODEL = {CLASSIFICATION: DEFAULT_CLASSIFIER_BASE}


def dataset_analyze(*, dataset_id: str) -> None:
    """Count the tokens of a dataset and render a few rows as the model will see them (through
    the default chat model's template; a classifier's rows as label and text). Worker side: needs
    the tokenizer. Idempotent; never raises."""
    import_backends()
    from .trainers.causal_lm import encode_row, render_row, tokenizer_for

    dataset = Dataset.objects.filter(pk=dataset_id).first()
    if dataset is None or dataset.is_analyzed:
        return
    slug = ANALYSIS_MODEL.get(dataset.format, DEFAULT_CHAT_MODEL)
    model = LanguageModel.objects.filter(slug=slug).first()
    version = model.active_version if model else None
    try:
        if version is None:
            raise RuntimeError(f"no active version of {slug} to count tokens with")
        tokenizer = tokenizer_for(model_spec(version), settings.MODEL_CACHE_DIR)
        parsed = _read(dataset)
        if parsed.format == CLASSIFICATION:
            dataset.tokens = sum(len(tokenizer(row["text"])["input_ids"]) for row in parsed.rows)
            dataset.preview = [f"[{row['label']}] {row['text']}" for row in parsed.rows[:3]]
        else:
            dataset.tokens = sum(
                len(encode_row(tokenizer, row, parsed.format)[0]) for row in parsed.rows
            )
            dataset.preview = [render_row(tokenizer, row, parsed.format) for row in parsed.rows[:3]]
        dataset.tokenizer_model = slug
    except Exception as exc:
        logger.exception("analysing dataset %s failed", dataset.pk)
        dataset.analysis_error = f"Counting tokens failed: {exc}"
    Dataset.objects.filter(pk=dataset.pk).update(  # it may have been deleted meanwhile
        tokens=dataset.tokens,
        preview=dataset.preview,
        tokenizer_model=dataset.tokenizer_model,
        analysis_error=dataset.analysis_error,
    )


def _read(dataset: Dataset) -> ParsedDataset:
    with dataset.file.open("rb") as handle:
        return parse_dataset(handle.read())


# -- jobs: the web side --------------------------------------------------------------------------
def finetune_job_create(
    *,
    owner: User,
    base_version: ModelVersion,
    training_file: Dataset,
    validation_file: Dataset | None = None,
    method: str | None = None,
    hyperparameters: Hyperparameters,
    suffix: str = "",
) -> FineTuningJob:
    """Queue a job on the training queue: a chat fine-tune on a chat model, a classifier on an
    embeddings model (``method`` defaults to the kind's first). Preconditions: the model version
    came from ``access_model`` for ``owner``, the datasets from ``access_dataset``; raises
    ServiceError for a base that cannot be fine-tuned, a method or file that does not suit it, or
    a bad suffix."""
    from .tasks import run_finetune_job

    kind = FineTuningJob.Kind(_job_kind(base_version))
    methods = FineTuningJob.METHODS[kind]
    method = method or methods[0]
    if method not in methods:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            f"method must be {' or '.join(methods)} for a {kind} job on {base_version.model.slug}",
            param="method",
        )
    if validation_file is not None and validation_file.pk == training_file.pk:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            "The validation file is the training file: its loss would say nothing. Pick another "
            "file, or none to hold out part of the training rows.",
            param="validation_file",
        )
    formats = _FORMATS[kind]
    for param, dataset in (("training_file", training_file), ("validation_file", validation_file)):
        if dataset is not None and dataset.format not in formats:
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER,
                f"{dataset.filename} holds {dataset.get_format_display().lower()} rows; a {kind} "
                f"job on {base_version.model.slug} needs "
                f"{' or '.join(Dataset.Format(f).label.lower() for f in formats)} rows.",
                param=param,
            )
    if suffix and not all(c.isascii() and (c.isalnum() or c == "-") for c in suffix):
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            "suffix may hold only letters, digits and '-'",
            param="suffix",
        )
    if len(suffix) > 32:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER, "suffix must be at most 32 characters", param="suffix"
        )
    with transaction.atomic():
        job = FineTuningJob.objects.create(
            owner=owner,
            kind=kind,
            base_version=base_version,
            training_file=training_file,
            validation_file=validation_file,
            method=method,
            hyperparameters=hyperparameters.model_dump(mode="json"),
            suffix=suffix.lower(),
        )
        _event(job, JobEvent.Kind.STATUS, "Queued: waiting for a training worker")
        enqueue_on_commit(run_finetune_job, job.pk)
    return job


_FORMATS = {
    FineTuningJob.Kind.CHAT: (Dataset.Format.CHAT, Dataset.Format.PROMPT_COMPLETION),
    FineTuningJob.Kind.CLASSIFICATION: (Dataset.Format.CLASSIFICATION,),
}


def _job_kind(base_version: ModelVersion) -> str:
    """A chat model is fine-tuned; a sentence encoder (embeddings) becomes a classifier."""
    task = base_version.model.task
    if base_version.base_version_id is None and base_version.model.owner_id is None:
        if task == LanguageModel.Task.CHAT:
            return FineTuningJob.Kind.CHAT
        if task == LanguageModel.Task.EMBEDDINGS:
            return FineTuningJob.Kind.CLASSIFICATION
    raise ServiceError(
        ErrorCode.INVALID_PARAMETER,
        f"{base_version.model.slug} cannot be fine-tuned; pick a registered chat model, or an "
        "embeddings model to train a classifier.",
        param="model",
    )


def finetune_job_cancel(*, job: FineTuningJob) -> bool:
    """Stop ``job``, keeping its log. False if it had already finished. A queued job is cancelled
    at once; a working one by its worker, within one training step."""
    active = FineTuningJob.objects.filter(pk=job.pk, status__in=FineTuningJob.ACTIVE)
    if active.filter(status=Status.QUEUED).update(
        status=Status.CANCELLED, cancel_requested=True, finished_at=timezone.now()
    ):
        job.refresh_from_db()
        _event(job, JobEvent.Kind.STATUS, "Cancelled before it started")
        return True
    if active.update(cancel_requested=True):
        job.refresh_from_db()
        _event(job, JobEvent.Kind.MESSAGE, "Cancel requested: stopping after this step")
        return True
    return False


def finetune_jobs_reap() -> int:
    """Fail the jobs whose worker stopped sending heartbeats (it died or lost its connection).
    Safe to call from any process at any time; returns how many it failed."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.FINETUNE_HEARTBEAT_TIMEOUT)
    lost = FineTuningJob.objects.filter(status__in=FineTuningJob.WORKING, heartbeat_at__lt=cutoff)
    failed = 0
    for job in list(lost):
        assert job.heartbeat_at is not None
        message = (
            f"The worker {job.worker or '(unknown)'} stopped responding: its last heartbeat was "
            f"{(now - job.heartbeat_at).total_seconds():.0f} s ago. Start the job again."
        )
        if lost.filter(pk=job.pk).update(
            status=Status.FAILED,
            error_code=ErrorCode.WORKER_LOST,
            error_message=message,
            finished_at=now,
        ):
            job.refresh_from_db()
            _event(job, JobEvent.Kind.STATUS, f"Failed: {message}", level=JobEvent.Level.ERROR)
            failed += 1
    return failed


def _event(
    job: FineTuningJob,
    kind: str,
    message: str,
    data: dict[str, Any] | None = None,
    *,
    level: str = JobEvent.Level.INFO,
) -> JobEvent:
    event = JobEvent.objects.create(
        job=job, kind=kind, message=message, data=data or {}, level=level
    )
    transaction.on_commit(lambda: publish_event(job, event))
    return event


# -- jobs: the worker side -----------------------------------------------------------------------
def finetune_job_run(*, job_id: str, worker: str) -> None:
    """Run one queued job to its end on this worker. A failure of the job ends it as failed (with
    a code and a reason) rather than raising.

    Only a queued job is claimed (compare-and-set), so a redelivered task never starts a second
    trainer for a job: a job that lost its worker is failed by ``finetune_jobs_reap`` instead.
    """
    job = FineTuningJob.objects.filter(pk=job_id).first()
    if job is None or job.status != Status.QUEUED:
        return
    now = timezone.now()
    if not FineTuningJob.objects.filter(pk=job.pk, status=Status.QUEUED, attempts=0).update(
        status=Status.VALIDATING,
        attempts=F("attempts") + 1,
        worker=worker,
        heartbeat_at=now,
        started_at=now,
    ):
        return
    job = FineTuningJob.objects.select_related(
        "base_version__model", "training_file", "validation_file", "owner"
    ).get(pk=job.pk)
    _event(job, JobEvent.Kind.STATUS, f"Validating the data on {worker}")
    deadline = time.monotonic() + settings.FINETUNE_MAX_SECONDS
    heartbeat = _Heartbeat(job, deadline)
    heartbeat.start()
    try:
        _run(job, deadline)
    except JobStopped as stop:
        _end(job, stop.status, code=stop.code, message=stop.message)
    except DatasetInvalid as invalid:
        _end(
            job,
            Status.FAILED,
            code="invalid_file",
            message=str(invalid),
            data={"errors": [{"line": e.line, "message": e.message} for e in invalid.errors]},
        )
    except Exception as exc:
        logger.exception("fine-tuning job %s failed", job.pk)
        _end(job, Status.FAILED, code=ErrorCode.INTERNAL, message=f"Training failed: {exc}")
    finally:
        heartbeat.stop()
        if not FineTuningJob.objects.filter(pk=job.pk, status=Status.SUCCEEDED).exists():
            output = _output_dir(job)
            for folder in (output, output.with_name(output.name + ".tmp")):
                shutil.rmtree(folder, ignore_errors=True)


class _Heartbeat(threading.Thread):
    """Writes the job's heartbeat while it works, including long steps, loading and evaluation.

    It also enforces FINETUNE_MAX_SECONDS: past it, it fails the job (so a job stuck inside one
    long computation does not stay "running"), and the trainer stops at its next check. Celery's
    time limits do not apply to the solo and thread pools that training workers use.
    """

    def __init__(self, job: FineTuningJob, deadline: float) -> None:
        super().__init__(name=f"heartbeat-{job.pk}", daemon=True)
        self.job = copy.copy(job)  # its own instance: _end refreshes it from this thread
        self.deadline = deadline
        self._stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self._stopped.wait(settings.FINETUNE_HEARTBEAT_SECONDS):
                try:
                    if time.monotonic() > self.deadline:
                        _end(
                            self.job,
                            Status.FAILED,
                            code=ErrorCode.TIMEOUT,
                            message=_timeout_message(),
                        )
                        return
                    _mine(self.job).update(heartbeat_at=timezone.now())
                except Exception:  # the database may be away a moment: beat again next time
                    logger.exception("heartbeat of job %s failed", self.job.pk)
                    connection.close()
        finally:
            connection.close()

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=10)


def _timeout_message() -> str:
    return f"The job ran over its time limit of {settings.FINETUNE_MAX_SECONDS:.0f} s."


def _mine(job: FineTuningJob) -> Any:
    """This run's job row while it is still working (not reaped, not cancelled meanwhile)."""
    return FineTuningJob.objects.filter(
        pk=job.pk, attempts=job.attempts, status__in=FineTuningJob.WORKING
    )


def _check(job: FineTuningJob, deadline: float) -> None:
    """Raise JobStopped when the job was cancelled, reaped, or ran out of time."""
    row = FineTuningJob.objects.filter(pk=job.pk).values("status", "cancel_requested").first()
    if row is None or row["status"] not in FineTuningJob.WORKING:
        raise JobStopped(
            Status.FAILED, ErrorCode.WORKER_LOST, "The job was taken from this worker."
        )
    if row["cancel_requested"]:
        raise JobStopped(Status.CANCELLED, "cancelled", "Cancelled.")
    if time.monotonic() > deadline:
        raise JobStopped(Status.FAILED, ErrorCode.TIMEOUT, _timeout_message())


def _split(
    parsed: ParsedDataset, validation: ParsedDataset | None, fraction: float, seed: int
) -> tuple[ParsedDataset, ParsedDataset]:
    if validation is not None:
        return parsed, validation
    order = list(range(len(parsed.rows)))
    random.Random(seed).shuffle(order)
    held = math.ceil(len(order) * fraction) if fraction and len(order) > 1 else 0
    held = min(held, len(order) - 1)

    def pick(indexes: list[int]) -> ParsedDataset:
        indexes = sorted(indexes)
        return ParsedDataset(
            parsed.format, [parsed.rows[i] for i in indexes], [parsed.lines[i] for i in indexes]
        )

    return pick(order[held:]), pick(order[:held])


def _run(job: FineTuningJob, deadline: float) -> None:
    import_backends()
    hp = Hyperparameters.model_validate(job.hyperparameters)
    parsed = _read(job.training_file)
    validation = _read(job.validation_file) if job.validation_file else None
    if validation is not None and validation.format != parsed.format:
        raise DatasetInvalid(
            "The validation file's rows have another shape than the training file's."
        )
    if job.kind == FineTuningJob.Kind.CLASSIFICATION:
        _run_classifier(job, hp, parsed, validation, deadline)
    else:
        _run_chat(job, hp, parsed, validation, deadline)


def _start_training(
    job: FineTuningJob, deadline: float, *, total: int, train: int, val: int
) -> None:
    now = timezone.now()
    if not _mine(job).update(
        status=Status.RUNNING,
        total_steps=total,
        training_started_at=now,
        heartbeat_at=now,
        train_rows=train,
        validation_rows=val,
    ):
        _check(job, deadline)
    job.refresh_from_db()
    epochs = Hyperparameters.model_validate(job.hyperparameters).n_epochs
    _event(job, JobEvent.Kind.STATUS, f"Training: {epochs} epochs, {total} steps")


def _step_logger(job: FineTuningJob, deadline: float) -> Any:
    """The trainers' per-step callback: stop if asked, then record the step and publish it."""

    def on_step(step: int, total: int, epoch: int, loss: float, lr: float, tokens: int) -> None:
        _check(job, deadline)
        job.step, job.trained_tokens, job.heartbeat_at = step, tokens, timezone.now()
        _mine(job).update(step=step, trained_tokens=tokens, heartbeat_at=job.heartbeat_at)
        _event(
            job,
            JobEvent.Kind.STEP,
            f"Step {step}/{total}: training loss {loss:.4f}",
            {
                "step": step,
                "total_steps": total,
                "epoch": epoch,
                "train_loss": loss,
                "learning_rate": lr,
                "tokens_seen": tokens,
            },
        )

    return on_step


def _output_dir(job: FineTuningJob) -> Path:
    return settings.FINETUNE_OUTPUT_DIR / job.id.hex


def _save(job: FineTuningJob, trainer: Any, deadline: float) -> Path:
    _check(job, deadline)
    output = _output_dir(job)
    output.parent.mkdir(parents=True, exist_ok=True)
    trainer.save(output)
    return output


def _run_chat(
    job: FineTuningJob,
    hp: Hyperparameters,
    parsed: ParsedDataset,
    validation: ParsedDataset | None,
    deadline: float,
) -> None:
    from .trainers.causal_lm import CausalLMTrainer, prompt_of

    train_rows, val_rows = _split(parsed, validation, hp.validation_fraction, hp.seed)
    trainer = CausalLMTrainer(
        base=model_spec(job.base_version),
        method=job.method,
        hyperparameters=hp,
        cache_dir=settings.MODEL_CACHE_DIR,
        device=settings.INFERENCE_DEVICE,
        threads=settings.INFERENCE_THREADS,
    )
    trainer.load()
    train = trainer.encode(train_rows.rows, train_rows.lines, parsed.format, source="training data")
    val = trainer.encode(val_rows.rows, val_rows.lines, parsed.format, source="validation data")
    _check(job, deadline)
    learned = sum(e.trained_tokens for e in train)
    _event(
        job,
        JobEvent.Kind.MESSAGE,
        f"{len(train)} training rows ({learned} answer tokens to learn), "
        f"{len(val)} validation rows",
        {"train_rows": len(train), "validation_rows": len(val), "answer_tokens": learned},
    )

    evaluation: dict[str, Any] = {}
    samples = [prompt_of(row, parsed.format) for row in val_rows.rows[:SAMPLE_PROMPTS]]
    if val:
        base_loss = trainer.evaluate(val)
        evaluation["base"] = {"loss": base_loss, "perplexity": math.exp(base_loss)}
        _event(
            job,
            JobEvent.Kind.EVAL,
            f"Base model: validation loss {base_loss:.4f}",
            {"step": 0, "val_loss": base_loss, "perplexity": math.exp(base_loss)},
        )
    base_answers = trainer.answer([prompt for prompt, _ in samples])
    _check(job, deadline)

    trainer.add_adapter()
    _start_training(job, deadline, total=trainer.total_steps(train), train=len(train), val=len(val))

    def on_epoch(epoch: int, step: int) -> None:
        if not val:
            return
        loss = trainer.evaluate(val)
        evaluation["tuned"] = {"loss": loss, "perplexity": math.exp(loss)}
        _event(
            job,
            JobEvent.Kind.EVAL,
            f"Epoch {epoch}: validation loss {loss:.4f}",
            {"step": step, "epoch": epoch, "val_loss": loss, "perplexity": math.exp(loss)},
        )

    trainer.fit(train, on_step=_step_logger(job, deadline), on_epoch=on_epoch)
    tuned_answers = trainer.answer([prompt for prompt, _ in samples])
    evaluation["samples"] = [
        {"prompt": _prompt_text(prompt), "expected": expected, "base": base, "tuned": tuned}
        for (prompt, expected), base, tuned in zip(
            samples, base_answers, tuned_answers, strict=True
        )
    ]
    _deploy(job, _save(job, trainer, deadline), evaluation)


def stratified_split(
    parsed: ParsedDataset, fractions: tuple[float, ...], seed: int
) -> list[ParsedDataset]:
    """Split classification rows into the training part and one part per fraction, each label
    divided in the same proportions (seeded, rounded; a label with a few rows still gives one to
    each part while it has three or more). Every label keeps at least one training row."""
    by_label: dict[str, list[int]] = {}
    for index, row in enumerate(parsed.rows):
        by_label.setdefault(row["label"], []).append(index)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    rng = random.Random(seed)
    for label in sorted(by_label):
        indexes = by_label[label]
        rng.shuffle(indexes)
        start = 0
        for part, fraction in enumerate(fractions, start=1):
            take = round(len(indexes) * fraction) or (1 if len(indexes) - start >= 3 else 0)
            take = max(min(take, len(indexes) - start - 1), 0)
            parts[part].extend(indexes[start : start + take])
            start += take
        parts[0].extend(indexes[start:])
    return [
        ParsedDataset(
            parsed.format,
            [parsed.rows[i] for i in sorted(part)],
            [parsed.lines[i] for i in sorted(part)],
        )
        for part in parts
    ]


def _run_classifier(
    job: FineTuningJob,
    hp: Hyperparameters,
    parsed: ParsedDataset,
    validation: ParsedDataset | None,
    deadline: float,
) -> None:
    from .metrics import classification_metrics, majority_baseline, tfidf_logreg_baseline
    from .trainers.classifier import ClassifierTrainer

    if validation is None:
        train_rows, test_rows, val_rows = stratified_split(
            parsed, (hp.test_fraction, hp.validation_fraction), hp.seed
        )
    else:
        train_rows, test_rows = stratified_split(parsed, (hp.test_fraction,), hp.seed)
        val_rows = validation
    labels = sorted(parsed.label_counts)
    trainer = ClassifierTrainer(
        base=model_spec(job.base_version),
        method=job.method,
        hyperparameters=hp,
        labels=labels,
        cache_dir=settings.MODEL_CACHE_DIR,
        device=settings.INFERENCE_DEVICE,
        threads=settings.INFERENCE_THREADS,
    )
    trainer.load()
    train = trainer.encode(train_rows.rows, train_rows.lines, source="training data")
    val = trainer.encode(val_rows.rows, val_rows.lines, source="validation data")
    test = trainer.encode(test_rows.rows, test_rows.lines, source="test split")
    splits = {"train": len(train), "validation": len(val), "test": len(test)}
    _event(
        job,
        JobEvent.Kind.MESSAGE,
        f"{len(labels)} labels; {len(train)} training, {len(val)} validation and {len(test)} "
        "test rows, split by label",
        {"labels": labels, **splits},
    )
    if not test:
        raise DatasetInvalid("The test split is empty: upload more rows or raise test_fraction.")
    _check(job, deadline)
    _start_training(job, deadline, total=trainer.total_steps(train), train=len(train), val=len(val))

    def on_epoch(epoch: int, step: int) -> None:
        if not val:
            return
        loss, accuracy = trainer.evaluate(val)
        _event(
            job,
            JobEvent.Kind.EVAL,
            f"Epoch {epoch}: validation loss {loss:.4f}, accuracy {accuracy:.3f}",
            {"step": step, "epoch": epoch, "val_loss": loss, "val_accuracy": accuracy},
        )

    trainer.fit(train, on_step=_step_logger(job, deadline), on_epoch=on_epoch)
    _check(job, deadline)
    scores = trainer.predict(test)
    truth = [labels[e.label] for e in test]
    predicted = [labels[max(range(len(labels)), key=row.__getitem__)] for row in scores]
    majority = majority_baseline([row["label"] for row in train_rows.rows])
    try:
        tfidf: list[str] | None = tfidf_logreg_baseline(
            [e.text for e in train],
            [labels[e.label] for e in train],
            [e.text for e in test],
            hp.seed,
        )
    except ValueError as exc:  # e.g. no word in any text ("empty vocabulary")
        logger.warning("job %s: no TF-IDF baseline: %s", job.pk, exc)
        tfidf = None
    evaluation: dict[str, Any] = {
        "labels": labels,
        "splits": splits,
        "test": classification_metrics(truth, predicted, labels),
        "baselines": {
            "majority": {
                "label": majority,
                **classification_metrics(truth, [majority] * len(test), labels),
            },
            "tfidf_logreg": classification_metrics(truth, tfidf, labels) if tfidf else None,
        },
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
    mine, baselines = evaluation["test"], evaluation["baselines"]
    assert isinstance(mine, dict) and isinstance(baselines, dict)
    _event(
        job,
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
    _deploy(job, _save(job, trainer, deadline), evaluation)


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, list):
        return "\n\n".join(m["content"] for m in prompt if m["role"] != "system")
    return str(prompt)


def fine_tuned_slug(job: FineTuningJob) -> str:
    return f"ft:{job.base_version.model.slug}:{job.suffix or 'custom'}:{job.id.hex[:8]}"


def _deploy(job: FineTuningJob, output: Path, evaluation: dict[str, Any]) -> None:
    """Register the result as a model private to the job's owner, and mark the job succeeded."""
    base = job.base_version
    with transaction.atomic():
        classifier = job.kind == FineTuningJob.Kind.CLASSIFICATION
        model = LanguageModel.objects.create(
            slug=fine_tuned_slug(job),
            display_name=f"{base.model.display_name} · {job.suffix or 'fine-tuned'}",
            task=LanguageModel.Task.CLASSIFICATION if classifier else base.model.task,
            description=f"Fine-tuned from {base} by job {job.openai_id} ({job.method}).",
            visibility=LanguageModel.Visibility.PRIVATE,
            owner=job.owner,
        )
        lora = job.method == FineTuningJob.Method.LORA
        version = ModelVersion.objects.create(
            model=model,
            label="1",
            source_kind=ModelVersion.Source.ADAPTER if lora else ModelVersion.Source.LOCAL,
            source=str(output),
            base_version=base if lora else None,
            context_length=base.context_length,
            is_active=True,
        )
        finished = timezone.now()
        deployed = (
            _mine(job)
            .filter(cancel_requested=False)
            .update(
                status=Status.SUCCEEDED,
                result_version=version,
                evaluation=evaluation,
                finished_at=finished,
            )
        )
        if not deployed:  # cancelled or taken meanwhile: register nothing
            transaction.set_rollback(True)
    if not deployed:
        _check(job, math.inf)  # raises JobStopped with the reason
        return
    job.refresh_from_db()
    _event(job, JobEvent.Kind.STATUS, f"Succeeded: deployed as {model.slug}", {"model": model.slug})


def _end(
    job: FineTuningJob,
    status: str,
    *,
    code: str,
    message: str,
    data: dict[str, Any] | None = None,
) -> None:
    """Finish a working job as cancelled or failed, unless it was finished elsewhere meanwhile."""
    fields: dict[str, Any] = {"status": status, "finished_at": timezone.now()}
    if status == Status.FAILED:
        fields.update(error_code=code, error_message=message)
    if not _mine(job).update(**fields):
        return
    job.refresh_from_db()
    level = JobEvent.Level.ERROR if status == Status.FAILED else JobEvent.Level.INFO
    text = (
        "Cancelled: what was logged is kept" if status == Status.CANCELLED else f"Failed: {message}"
    )
    _event(job, JobEvent.Kind.STATUS, text, data, level=level)


# -- deleting ------------------------------------------------------------------------------------
def dataset_delete(*, dataset: Dataset) -> None:
    """Delete a dataset and its file. Refused (ServiceError naming the job) while a job uses it:
    the job's record points at its data. Precondition: ``access_dataset``."""
    from django.db.models import Q

    used_by = FineTuningJob.objects.filter(
        Q(training_file=dataset) | Q(validation_file=dataset)
    ).first()
    if used_by is not None:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            f"The file is used by the fine-tuning job {used_by.openai_id}; it is kept as that "
            "job's record.",
            param="file_id",
        )
    name, storage = str(dataset.file.name), dataset.file.storage
    try:
        with transaction.atomic():
            dataset.delete()
            transaction.on_commit(lambda: storage.delete(name))
    except ProtectedError:  # a job took it meanwhile
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            "The file is now used by a fine-tuning job; it is kept as that job's record.",
            param="file_id",
        ) from None


def fine_tuned_model_delete(*, model: LanguageModel) -> None:
    """Retire one of the user's fine-tuned models: it leaves the picker and /v1/models at once and
    its trained weights are deleted. The rows stay, disabled, as the record of the answers it gave.
    Precondition: ``model`` came from ``access_model`` and ``model.owner`` is the caller."""
    if model.owner_id is None:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER, "Only fine-tuned models can be deleted.", param="model"
        )
    # Only what the platform trained is removed from disk, never a folder an admin registered.
    folders = [
        Path(v.source)
        for v in model.versions.all()
        if Path(v.source).is_relative_to(settings.FINETUNE_OUTPUT_DIR)
    ]

    def remove() -> None:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)

    with transaction.atomic():
        LanguageModel.objects.filter(pk=model.pk).update(is_enabled=False)
        transaction.on_commit(remove)


def finetune_requeue_stranded() -> int:
    """Send again the tasks of jobs still queued, and of datasets not yet counted,
    REQUEUE_SECONDS after their message went out: the broker lost it (a restarted Redis, or the
    embedded in-memory broker after a restart; see apps.core.queues)."""
    from .tasks import analyze_dataset, run_finetune_job

    older_than = settings.REQUEUE_SECONDS
    jobs = FineTuningJob.objects.filter(status=Status.QUEUED)
    datasets = Dataset.objects.filter(tokens__isnull=True, analysis_error="")
    return requeue_stale(jobs, run_finetune_job, older_than=older_than) + requeue_stale(
        datasets, analyze_dataset, older_than=older_than
    )
