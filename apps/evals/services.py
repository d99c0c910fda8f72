"""Writes of eval sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.db import transaction
from django.utils.translation import gettext as _

from apps.accounts.models import User
from apps.catalog.models import LanguageModel, ModelVersion
from apps.catalog.selectors import active_version
from apps.core.errors import ErrorCode, ServiceError
from apps.core.queues import enqueue_on_commit
from apps.core.work import work_cancel
from apps.inference.services import sampling_params_for

from .graders import check_grader
from .items import EvalSetInvalid, check_ideal, check_input, parse_items
from .models import EvalItem, EvalResult, EvalRun, EvalSet

DEMO = Path(__file__).parent / "demo" / "demo-eval.jsonl"
MAX_NAME = 200


@transaction.atomic
def eval_set_create(*, owner: User, name: str, filename: str, data: bytes) -> EvalSet:
    """An eval set of ``owner``'s from the JSONL ``data``: every line checked first
    (``apps.evals.items``), so a bad file raises EvalSetInvalid and writes nothing. ``name``
    defaults to the file's name."""
    name = name.strip() or Path(filename).stem or _("Eval set")
    if len(name) > MAX_NAME:
        raise EvalSetInvalid(
            _("The name has %(count)s characters; the limit is %(limit)s.")
            % {"count": len(name), "limit": MAX_NAME}
        )
    items = parse_items(data)
    eval_set = EvalSet.objects.create(owner=owner, name=name, filename=Path(filename).name[:255])
    EvalItem.objects.bulk_create(
        EvalItem(
            eval_set=eval_set,
            line=item.line,
            input=item.input,
            ideal=item.ideal,
            label=item.label,
            schema=item.schema,
            metadata=item.metadata,
        )
        for item in items
    )
    return eval_set


def eval_set_add_demo(*, owner: User) -> EvalSet:
    """The shipped demo set (facts, arithmetic, formatting and the fine-tuning demo's mascot
    fact, 60 items) as one of ``owner``'s."""
    return eval_set_create(
        owner=owner, name=_("Demo eval set"), filename=DEMO.name, data=DEMO.read_bytes()
    )


def eval_set_delete(*, eval_set: EvalSet) -> None:
    """Precondition: ``eval_set`` came from ``access_eval_set``."""
    eval_set.delete()


@transaction.atomic
def eval_run_start(
    *,
    owner: User,
    eval_set: EvalSet,
    model: LanguageModel,
    graders: list[Any],
    settings: dict[str, Any] | None = None,
    seed: int = 0,
    version: ModelVersion | None = None,
) -> EvalRun:
    """Run ``eval_set`` on ``model``'s active version: one result row per item, the runner
    enqueued on commit. ``settings`` are sampling parameters over the version's defaults
    (greedy unless they say otherwise; a seed is chosen where none is set, and kept, so the run
    can be repeated); ``seed`` is the bootstrap's. Preconditions: the set came from
    ``access_eval_set``, the model from ``access_model``; ``version``, when given, is one of
    its versions to run instead of the active one (a fine-tuning job's base). ServiceError,
    nothing written, for no grader, a grader that is not one, or parameters out of bounds."""
    from .tasks import run_eval

    if not graders:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER, _("Choose at least one grader."), param="graders"
        )
    try:
        checked = [check_grader(config) for config in graders]
    except ValueError as problem:
        raise ServiceError(ErrorCode.INVALID_PARAMETER, str(problem), param="graders") from None
    version = version or active_version(model)
    params = sampling_params_for(version, settings, fallback={"temperature": 0.0}, new_seed=True)
    items = list(eval_set.items.all())
    run = EvalRun.objects.create(
        owner=owner,
        eval_set=eval_set,
        model_version=version,
        params=params.model_dump(mode="json"),
        graders=checked,
        seed=seed,
        total=len(items),
    )
    EvalResult.objects.bulk_create(EvalResult(run=run, item=item) for item in items)
    enqueue_on_commit(run_eval, run.pk)
    return run


def eval_run_cancel(*, run: EvalRun) -> bool:
    """Stop the run: one still waiting ends at once; a running one's answers in flight are
    stopped and what was graded is summed up. False when it had already ended. Precondition:
    ``run`` came from ``access_eval_run``."""
    return bool(work_cancel(run))


@transaction.atomic
def eval_item_add(
    *,
    owner: User,
    eval_set: EvalSet | None,
    new_name: str,
    messages: list[dict[str, str]],
    ideal: str,
) -> EvalItem:
    """An item of ``messages`` (a conversation up to an answer) with ``ideal`` as its answer, at
    the end of ``eval_set`` (precondition: from ``access_eval_set``), or of a new set named
    ``new_name`` when it is None. EvalSetInvalid, nothing written, for an ideal or a name that
    would not pass an upload's checks."""
    try:  # the rules of an upload's lines
        checked_input = check_input(messages)
        checked_ideal = check_ideal(ideal.strip() or None, required=True)
    except ValueError as problem:
        raise EvalSetInvalid(str(problem)) from None
    if eval_set is None:
        name = new_name.strip()
        if not name:
            raise EvalSetInvalid(_("Give the new eval set a name."))
        if len(name) > MAX_NAME:
            raise EvalSetInvalid(
                _("The name has %(count)s characters; the limit is %(limit)s.")
                % {"count": len(name), "limit": MAX_NAME}
            )
        eval_set = EvalSet.objects.create(owner=owner, name=name)
    last = (
        EvalItem.objects.select_for_update()
        .filter(eval_set=eval_set)
        .order_by("-line")
        .values_list("line", flat=True)
        .first()
    )
    return EvalItem.objects.create(
        eval_set=eval_set,
        line=(last or 0) + 1,
        input=checked_input,
        ideal=checked_ideal,
        metadata={"source": "chat"},
    )


# What a fine-tuning job's evaluation grades by: the answer contains an ideal (ignoring case),
# its first number is an ideal's, and a JSON answer follows the item's schema.
LOOP_GRADERS = [
    {"type": "string_check", "operation": "ilike"},
    {"type": "numeric", "tolerance": 0.0},
    {"type": "json_schema"},
]
LOOP_SETTINGS = {"temperature": 0.0, "max_tokens": 64}


def eval_runs_for_finetune(
    *, owner: User, eval_set: EvalSet, base: ModelVersion, result: ModelVersion
) -> tuple[EvalRun, EvalRun]:
    """The two runs of a fine-tuning job's evaluation: ``eval_set`` on the job's base version
    and on the version it deployed, with the same graders, settings and seed, so that they
    compare item by item."""
    runs = tuple(
        eval_run_start(
            owner=owner,
            eval_set=eval_set,
            model=version.model,
            version=version,
            graders=LOOP_GRADERS,
            settings={**LOOP_SETTINGS, "seed": 0},
        )
        for version in (base, result)
    )
    return runs[0], runs[1]
