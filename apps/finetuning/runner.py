"""What a training worker does with a job: claim it, train it through one orchestration for every
kind of job (the differences are ``recipes.py``'s), save and deploy the result, or end it failed
or cancelled with the reason. Also counting a dataset's tokens (inference workers do that: they
have the tokenizer), and the sweeps every worker's heartbeat runs for jobs
(``FinetuningConfig.ready`` registers them).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.catalog.models import LanguageModel, ModelVersion
from apps.catalog.selectors import DEFAULT_CHAT_MODEL, DEFAULT_CLASSIFIER_BASE, version_spec
from apps.core.errors import ErrorCode, ServiceError, failure_for_people
from apps.core.models import Worker
from apps.core.work import (
    Failure,
    this_run,
    work_claim,
    work_expire,
    work_finish,
    work_reap,
    work_requeue_stale,
)
from apps.evals.services import eval_runs_for_finetune
from apps.inference.engines.gguf import gguf_file
from apps.inference.engines.gguf_export import ExportError, export_lora, export_model
from apps.inference.engines.registry import gguf_weights, import_backends
from apps.inference.protocol import ModelSpec

from .datasets import CLASSIFICATION, DatasetInvalid, ParsedDataset, parse_dataset
from .models import Dataset, FineTuningJob, JobEvent
from .recipes import RECIPES
from .schemas import Hyperparameters
from .services import fine_tuned_slug, job_event_add

logger = logging.getLogger(__name__)

Status = FineTuningJob.Status


class JobStopped(Exception):
    def __init__(self, status: str, failure: Failure | None = None) -> None:
        super().__init__(failure.message if failure else status)
        self.status, self.failure = status, failure


def finetune_job_run(*, job_id: str, worker: str) -> None:
    """Run one queued job to its end on this worker. A failure of the job ends it as failed (with
    a code and a reason) rather than raising.

    Only a queued job is claimed (compare-and-set), so a redelivered task never starts a second
    trainer for a job: a job whose worker is lost is failed by any worker's sweep instead.
    """
    job = FineTuningJob.objects.filter(pk=job_id).first()
    if job is None or not work_claim(job, worker=worker, status=Status.VALIDATING):
        return
    job = FineTuningJob.objects.select_related(
        "base_version__model", "training_file", "validation_file", "owner"
    ).get(pk=job.pk)
    job_event_add(job, JobEvent.Kind.STATUS, f"Validating the data on {worker}")
    deadline = time.monotonic() + settings.FINETUNE_MAX_SECONDS
    try:
        _train(job, deadline)
    except JobStopped as stop:
        _end(job, stop.status, stop.failure)
    except DatasetInvalid as invalid:
        errors = [{"line": e.line, "message": e.message} for e in invalid.errors]
        _end(job, Status.FAILED, Failure(ErrorCode.INVALID_FILE, str(invalid)), {"errors": errors})
    except Exception as exc:
        logger.exception("fine-tuning job %s failed", job.pk)
        _end(
            job,
            Status.FAILED,
            Failure(ErrorCode.INTERNAL, f"Training failed: {failure_for_people(exc)}"),
        )
    finally:
        if not FineTuningJob.objects.filter(pk=job.pk, status=Status.SUCCEEDED).exists():
            output = _output_dir(job)
            for folder in (output, output.with_name(output.name + ".tmp")):
                shutil.rmtree(folder, ignore_errors=True)


def _train(job: FineTuningJob, deadline: float) -> None:
    """The one orchestration: read and split the data, build the trainer, log the splits, do
    what the kind does first, train with a step callback that can stop the job, evaluate, save
    and deploy. ``_check`` between the stages stops a cancelled, reaped or overdue job."""
    import_backends()
    hp = Hyperparameters.model_validate(job.hyperparameters)
    parsed = _read(job.training_file)
    validation = _read(job.validation_file) if job.validation_file else None
    if validation is not None and validation.format != parsed.format:
        raise DatasetInvalid(
            "The validation file's rows have another shape than the training file's."
        )
    recipe = RECIPES[job.kind](job, hp, parsed, validation)
    train, val, (summary, data) = recipe.prepare()
    _check(job, deadline)
    job_event_add(job, JobEvent.Kind.MESSAGE, summary, data)
    recipe.before_training()
    _check(job, deadline)
    _start_training(
        job, deadline, total=recipe.trainer.total_steps(train), train=len(train), val=len(val)
    )

    def on_epoch(epoch: int, step: int) -> None:
        figures = recipe.epoch_figures(val, epoch, step)
        if figures is not None:
            job_event_add(job, JobEvent.Kind.EVAL, *figures)

    recipe.trainer.fit(train, on_step=_step_logger(job, deadline), on_epoch=on_epoch)
    _check(job, deadline)
    evaluation = recipe.evaluation()
    _deploy(job, _save(job, recipe.trainer, deadline), evaluation)


def _read(dataset: Dataset) -> ParsedDataset:
    with dataset.file.open("rb") as handle:
        return parse_dataset(handle.read())


def _timeout() -> Failure:
    return Failure(
        ErrorCode.TIMEOUT,
        f"The job ran over its time limit of {settings.FINETUNE_MAX_SECONDS:.0f} s.",
    )


def _check(job: FineTuningJob, deadline: float) -> None:
    """Raise JobStopped when the job was cancelled, reaped, or ran out of time."""
    row = FineTuningJob.objects.filter(pk=job.pk).values("status", "cancel_requested").first()
    if row is None or row["status"] not in FineTuningJob.WORKING:
        raise JobStopped(
            Status.FAILED, Failure(ErrorCode.WORKER_LOST, "The job was taken from this worker.")
        )
    if row["cancel_requested"]:
        raise JobStopped(Status.CANCELLED)
    if time.monotonic() > deadline:
        raise JobStopped(Status.FAILED, _timeout())


def _start_training(
    job: FineTuningJob, deadline: float, *, total: int, train: int, val: int
) -> None:
    now = timezone.now()
    if not this_run(job).update(
        status=Status.RUNNING,
        total_steps=total,
        training_started_at=now,
        progress_at=now,
        train_rows=train,
        validation_rows=val,
    ):
        _check(job, deadline)
    job.refresh_from_db()
    epochs = Hyperparameters.model_validate(job.hyperparameters).n_epochs
    job_event_add(job, JobEvent.Kind.STATUS, f"Training: {epochs} epochs, {total} steps")


def _step_logger(job: FineTuningJob, deadline: float) -> Any:
    """The trainers' per-step callback: stop if asked, then record the step and publish it."""

    def on_step(step: int, total: int, epoch: int, loss: float, lr: float, tokens: int) -> None:
        _check(job, deadline)
        job.step, job.trained_tokens, job.progress_at = step, tokens, timezone.now()
        this_run(job).update(step=step, trained_tokens=tokens, progress_at=job.progress_at)
        job_event_add(
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


def _save(job: FineTuningJob, trainer: Any, deadline: float) -> tuple[Path, str]:
    """Write the result, and its GGUF form where the base is a GGUF file; returns the folder
    and the engine that serves it (``auto``, or ``transformers`` when there is no GGUF form)."""
    _check(job, deadline)
    output = _output_dir(job)
    output.parent.mkdir(parents=True, exist_ok=True)
    trainer.save(output)
    base = version_spec(job.base_version)
    if not gguf_weights(base):
        return output, ModelVersion.Engine.AUTO
    lora = job.method == FineTuningJob.Method.LORA
    try:
        path = export_lora(output, gguf_file(base)) if lora else _export_model(output, base)
    except ExportError as exc:
        job_event_add(
            job,
            JobEvent.Kind.MESSAGE,
            f"Not written as GGUF ({exc}): the torch engine serves it",
            level=JobEvent.Level.WARNING,
        )
        return output, ModelVersion.Engine.TRANSFORMERS
    size = path.stat().st_size
    job_event_add(
        job,
        JobEvent.Kind.MESSAGE,
        f"Written as GGUF for llama.cpp: {path.name}, {size / 1e6:.1f} MB",
        {"gguf": path.name, "bytes": size},
    )
    return output, ModelVersion.Engine.AUTO


def _export_model(output: Path, base: ModelSpec) -> Path:
    return export_model(output, gguf_file(base), chat_template=base.chat_template)


def _deploy(job: FineTuningJob, saved: tuple[Path, str], evaluation: dict[str, Any]) -> None:
    """Register the result as a model private to the job's owner, and mark the job succeeded."""
    base = job.base_version
    output, engine = saved
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
            engine=engine,
            is_active=True,
        )
        deployed = work_finish(
            job,
            status=Status.SUCCEEDED,
            unless_cancelled=True,
            result_version=version,
            evaluation=evaluation,
        )
        if not deployed:  # cancelled or taken meanwhile: register nothing
            transaction.set_rollback(True)
    if not deployed:
        _check(job, math.inf)  # raises JobStopped with the reason
        return
    job.refresh_from_db()
    job_event_add(
        job, JobEvent.Kind.STATUS, f"Succeeded: deployed as {model.slug}", {"model": model.slug}
    )
    if job.eval_set is not None:
        _evaluate(job, version)


def _evaluate(job: FineTuningJob, result: ModelVersion) -> None:
    """Run the job's eval set on its base and on the result (on the inference workers; the job
    page compares them once both have ended)."""
    assert job.eval_set is not None
    try:
        with transaction.atomic():
            base_run, result_run = eval_runs_for_finetune(
                owner=job.owner, eval_set=job.eval_set, base=job.base_version, result=result
            )
            FineTuningJob.objects.filter(pk=job.pk).update(
                eval_base_run=base_run, eval_result_run=result_run
            )
    except ServiceError as refused:  # the job stands; its evaluation could not start
        job_event_add(
            job, JobEvent.Kind.MESSAGE, f"The evaluation could not start: {refused.message}"
        )
        return
    job_event_add(
        job,
        JobEvent.Kind.MESSAGE,
        f"Evaluating {job.eval_set.name}: the base and the result, {base_run.total} items each",
    )


def _end(
    job: FineTuningJob,
    status: str,
    failure: Failure | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Finish a working job as cancelled or failed, unless it was finished elsewhere meanwhile."""
    if not work_finish(job, status=status, failure=failure):
        return
    job.refresh_from_db()
    failed = status == Status.FAILED
    text = f"Failed: {job.error_message}" if failed else "Cancelled: what was logged is kept"
    level = JobEvent.Level.ERROR if failed else JobEvent.Level.INFO
    job_event_add(job, JobEvent.Kind.STATUS, text, data, level=level)


# -- datasets ------------------------------------------------------------------------------------
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
        tokenizer = tokenizer_for(version_spec(version), settings.MODEL_CACHE_DIR)
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


# -- sweeps (every worker's heartbeat) ---------------------------------------------------------


def _lost(worker: Worker) -> str:
    return (
        f"The worker {worker.hostname} stopped responding ({worker.state}) before the job "
        "finished. Start the job again."
    )


def finetune_jobs_reap() -> int:
    """Fail the jobs whose worker is gone (``worker_lost``), and the jobs still working past
    FINETUNE_MAX_SECONDS (``timeout``: one stuck inside a single long computation included).
    Safe to run in every worker at once; returns how many it ended."""
    ended = work_reap(FineTuningJob, lost=_lost).failed
    ended += work_expire(FineTuningJob, seconds=settings.FINETUNE_MAX_SECONDS, failure=_timeout())
    for job in FineTuningJob.objects.filter(pk__in=ended):
        job_event_add(
            job, JobEvent.Kind.STATUS, f"Failed: {job.error_message}", level=JobEvent.Level.ERROR
        )
    return len(ended)


def finetune_requeue_stranded() -> int:
    """Send again the tasks of jobs still queued, and of datasets not yet counted,
    REQUEUE_SECONDS after their message went out: the broker lost it (a restarted Redis, or the
    embedded in-memory broker after a restart; see apps.core.work)."""
    from .tasks import analyze_dataset, run_finetune_job

    older_than = settings.REQUEUE_SECONDS
    jobs = FineTuningJob.objects.filter(status=Status.QUEUED)
    datasets = Dataset.objects.filter(tokens__isnull=True, analysis_error="")
    return work_requeue_stale(jobs, run_finetune_job, older_than=older_than) + work_requeue_stale(
        datasets, analyze_dataset, older_than=older_than
    )
