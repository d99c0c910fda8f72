"""Reads of eval sets, and the one way a client-supplied id becomes one."""

from __future__ import annotations

import uuid

from django.db.models import Count
from django.http import Http404

from apps.accounts.models import User

from .models import EvalResult, EvalRun, EvalSet


def access_eval_set(user: User, eval_set_id: object) -> EvalSet:
    """The eval set ``eval_set_id`` (a UUID, or its ``eval_…`` id) if ``user`` owns it; 404 for
    missing and not-yours alike."""
    text = str(eval_set_id).removeprefix("eval_")
    try:
        key = uuid.UUID(text)
    except ValueError:
        raise Http404("No such eval set") from None
    found = (
        EvalSet.objects.annotate(item_count=Count("items")).filter(pk=key, owner_id=user.pk).first()
        if user.is_authenticated
        else None
    )
    if found is None:
        raise Http404("No such eval set")
    return found


def eval_sets_for(user: User) -> list[EvalSet]:
    """``user``'s eval sets, newest first, each with ``item_count``."""
    return list(EvalSet.objects.filter(owner=user).annotate(item_count=Count("items")))


def access_eval_run(user: User, run_id: object) -> EvalRun:
    """The eval run ``run_id`` (a UUID, or its ``evalrun_…`` id) if ``user`` owns it; 404
    otherwise."""
    text = str(run_id).removeprefix("evalrun_")
    try:
        key = uuid.UUID(text)
    except ValueError:
        raise Http404("No such eval run") from None
    found = (
        EvalRun.objects.select_related("eval_set", "model_version__model")
        .filter(pk=key, owner_id=user.pk)
        .first()
        if user.is_authenticated
        else None
    )
    if found is None:
        raise Http404("No such eval run")
    return found


def runs_of(eval_set: EvalSet) -> list[EvalRun]:
    """The set's runs, newest first."""
    return list(eval_set.runs.select_related("model_version__model"))


def run_results(run: EvalRun) -> list[EvalResult]:
    """The run's results in the items' order, with their items and answers."""
    return list(run.results.select_related("item", "generation"))
