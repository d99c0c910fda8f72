"""What a worker does for an eval run: answer every item, grade each answer, sum up.

An eval run is a work record a worker claims (``run_eval``); its runner keeps up to
EVAL_CONCURRENCY items in flight as ordinary generations at batch priority (the engine batches
them, and every interactive request overtakes them), grades each answer as soon as it ends, and
starts the next. Each item's generation is made once, in the transaction that marks its result
started, and each result is graded once (written only while ``graded_at`` is empty), so a runner
whose worker is lost is reaped like any work record and the next worker's runner goes on from
the rows: nothing is answered or graded twice, and the answers in flight are resumed by their
own reaper. When every item is graded the runner writes the run's aggregates and ends it; a
cancel stops the answers in flight and sums up what was graded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.core import runtime
from apps.core.errors import ServiceError
from apps.core.work import (
    this_run,
    work_claim,
    work_finish,
    work_hand_back,
    work_reap,
    work_requeue_stale,
)
from apps.inference.models import Generation, Priority
from apps.inference.protocol import SamplingParams
from apps.inference.services import generation_cancel, generation_start
from apps.inference.usage import quota_pause

from .graders import grade, grader_name
from .models import EvalResult, EvalRun
from .stats import bootstrap

logger = logging.getLogger(__name__)


def _start(run: EvalRun, result: EvalResult) -> None:
    """Make the generation of ``result``'s item (once), or record why it cannot start."""
    with transaction.atomic():
        if not EvalResult.objects.filter(pk=result.pk, started=False).update(started=True):
            return
        try:
            with transaction.atomic():
                (generation,) = generation_start(
                    user=run.owner,
                    version=run.model_version,
                    params=SamplingParams.model_validate(run.params),
                    messages=result.item.messages(),
                    priority=Priority.BATCH,
                )
                EvalResult.objects.filter(pk=result.pk).update(generation=generation)
        except ServiceError as refused:
            EvalResult.objects.filter(pk=result.pk).update(
                errored=refused.message, graded_at=timezone.now()
            )


def _grade(run: EvalRun, result: EvalResult) -> None:
    """Grade the ended answer of ``result`` by each of the run's graders (once)."""
    generation = result.generation
    assert generation is not None and generation.is_finished
    if generation.status == Generation.Status.CANCELLED:
        return  # the run was cancelled: the item stays ungraded
    item = result.item
    grades, errored = None, ""
    if generation.status == Generation.Status.SUCCEEDED:
        grades = [
            asdict(
                grade(
                    config,
                    generation.output,
                    ideals=item.ideal,
                    item_label=item.label,
                    schema=item.schema,
                )
            )
            for config in run.graders
        ]
    else:
        errored = generation.error_message or generation.error_code or "the answer failed"
    EvalResult.objects.filter(pk=result.pk, graded_at__isnull=True).update(
        grades=grades, errored=errored, graded_at=timezone.now()
    )


def _tally(run: EvalRun) -> tuple[list[EvalResult], list[EvalResult], int]:
    """The results not started and those in flight, after grading every answer that ended;
    and how many are graded (written to the run when it changed)."""
    results = list(
        EvalResult.objects.filter(run=run).select_related("generation", "item").order_by("pk")
    )
    pending, running, graded = [], [], 0
    for result in results:
        if result.graded_at is not None:
            graded += 1
        elif not result.started:
            pending.append(result)
        elif result.generation is None or not result.generation.is_finished:
            running.append(result)
        else:
            _grade(run, result)
            graded += result.generation.status != Generation.Status.CANCELLED
    if graded != run.graded:
        this_run(run).update(graded=graded)
        run.graded = graded
    return pending, running, graded


def aggregates(run: EvalRun, results: list[EvalResult]) -> list[dict[str, Any]]:
    """Per grader, from the graded results: the counts (passed, failed, and errored: items with
    no answer, which score 0), and the mean score over the items the grader applies to with its
    95% bootstrap interval (the run's seed). The same figures come out whenever they are
    recomputed from the stored grades."""
    summary = []
    for index, config in enumerate(run.graders):
        scores: list[float] = []
        passed = failed = errored = 0
        for result in results:
            if result.graded_at is None:
                continue
            if result.grades is None:
                errored += 1
                scores.append(0.0)
                continue
            given = result.grades[index]
            if given["passed"] is None:
                continue  # the grader does not apply to this item
            scores.append(float(given["score"]))
            passed += bool(given["passed"])
            failed += not given["passed"]
        figures: dict[str, Any] = {
            "grader": grader_name(config),
            "config": config,
            "passed": passed,
            "failed": failed,
            "errored": errored,
            "n": len(scores),
            "mean": None,
            "low": None,
            "high": None,
        }
        if scores:
            interval = bootstrap(scores, seed=run.seed)
            figures.update(mean=interval.mean, low=interval.low, high=interval.high)
        summary.append(figures)
    return summary


def _finish(run: EvalRun, status: str) -> None:
    results = list(EvalResult.objects.filter(run=run))
    with transaction.atomic():
        if not work_finish(run, status=status, aggregates=aggregates(run, results)):
            transaction.set_rollback(True)


def eval_run_run(*, run_id: str, worker: str) -> None:
    """Claim the run and work through it (see the module's doc)."""
    run = EvalRun.objects.select_related("owner", "model_version").filter(pk=run_id).first()
    if run is None or run.is_finished or not work_claim(run, worker=worker):
        return
    logger.info("eval run %s: running on %s", run.pk, worker)
    while True:
        if runtime.stopping.is_set():
            from .tasks import run_eval

            work_hand_back(run, run_eval)
            return
        cancel = EvalRun.objects.filter(pk=run.pk).values_list("cancel_requested", flat=True)
        if not cancel or not this_run(run).exists():
            return  # deleted, or taken back
        pending, running, _graded = _tally(run)
        if cancel[0]:
            for result in running:
                if result.generation is not None:
                    generation_cancel(generation=result.generation)
            if not running:
                _finish(run, EvalRun.Status.CANCELLED)
                return
        elif not pending and not running:
            _finish(run, EvalRun.Status.SUCCEEDED)
            return
        else:
            _top_up(run, pending, running)
        time.sleep(settings.EVAL_POLL_SECONDS)


def _top_up(run: EvalRun, pending: list[EvalResult], running: list[EvalResult]) -> None:
    """Start the next items, up to EVAL_CONCURRENCY in flight, while the owner's daily token
    quota allows (a used-up quota pauses the run and says why)."""
    room = settings.EVAL_CONCURRENCY - len(running)
    if room <= 0 or not pending:
        return
    paused = quota_pause(run.owner)
    if paused != run.paused:
        run.paused = paused
        this_run(run).update(paused=paused)
    if paused:
        return
    for result in pending[:room]:
        _start(run, result)


def eval_runs_reap() -> int:
    """Take back the runs of lost workers: each goes back to the queue, and the next worker's
    runner goes on where the rows stand."""
    from .tasks import run_eval

    lost = "The worker stopped while running the eval."
    return len(work_reap(EvalRun, task=run_eval, lost=lost))


def eval_runs_requeue_stranded() -> int:
    """Send again the runner of a run still queued REQUEUE_SECONDS after its message went out."""
    from .tasks import run_eval

    waiting = EvalRun.objects.filter(status=EvalRun.Status.QUEUED, cancel_requested=False)
    return work_requeue_stale(waiting, run_eval, older_than=settings.REQUEUE_SECONDS)
