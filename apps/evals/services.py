"""Writes of eval sets."""

from __future__ import annotations

from pathlib import Path

from django.db import transaction
from django.utils.translation import gettext as _

from apps.accounts.models import User

from .items import EvalSetInvalid, parse_items
from .models import EvalItem, EvalSet

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
