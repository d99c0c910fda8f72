from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.http import Http404

from apps.accounts.models import User

from .models import Generation, UsageRecord


def access_generation(user: User, generation_id: object) -> Generation:
    """The generation ``generation_id`` if ``user`` started it; 404 for missing and not-yours."""
    try:
        key = uuid.UUID(str(generation_id))
    except ValueError:
        raise Http404("No such generation") from None
    generation = (
        Generation.objects.select_related("model_version__model")
        .filter(pk=key, user_id=user.pk)
        .first()
        if user.is_authenticated
        else None
    )
    if generation is None:
        raise Http404("No such generation")
    return generation


@dataclass(frozen=True)
class DayUsage:
    day: date
    prompt_tokens: int
    completion_tokens: int

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def usage_by_day(user: User, *, days: int = 30) -> list[DayUsage]:
    """``user``'s tokens per UTC day for the last ``days`` days, today last, empty days included."""
    today = datetime.now(UTC).date()
    first = today - timedelta(days=days - 1)
    rows = (
        UsageRecord.objects.filter(user=user, created_at__date__gte=first)
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day")
        .annotate(p=Sum("prompt_tokens"), c=Sum("completion_tokens"))
    )
    found = {r["day"]: (r["p"] or 0, r["c"] or 0) for r in rows}
    return [
        DayUsage(first + timedelta(days=i), *found.get(first + timedelta(days=i), (0, 0)))
        for i in range(days)
    ]


def usage_totals(user: User, *, group: str, days: int = 30) -> list[dict[str, object]]:
    """Totals over the last ``days`` days grouped by ``group`` (a field path such as
    ``model__slug``, ``api_key__name`` or ``source``), largest first."""
    since = datetime.now(UTC) - timedelta(days=days)
    rows = (
        UsageRecord.objects.filter(user=user, created_at__gte=since)
        .values(group)
        .annotate(
            prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"), requests=Count("id")
        )
        .order_by(group)
    )
    return [
        {
            "name": r[group],
            "prompt": r["prompt"],
            "completion": r["completion"],
            "total": r["prompt"] + r["completion"],
            "requests": r["requests"],
        }
        for r in rows
    ]
