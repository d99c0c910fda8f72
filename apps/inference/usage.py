"""Usage and quotas, one capability: the usage row a worker writes for every request that used
tokens, the account's daily token quota read from those rows, and the usage page's figures.

Quotas compare today's usage rows (UTC), plus the max_tokens of answers still in flight, with the
account's quota; per-key request rate limits are ``apps.accounts.limits``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.utils.translation import gettext as _

from apps.accounts.limits import LimitExceeded, Window
from apps.accounts.models import User

from .models import EmbeddingBatch, Generation, Priority, UsageRecord


def usage_record(
    *, work: Generation | EmbeddingBatch, prompt_tokens: int, completion_tokens: int
) -> None:
    """One usage row per finished request (idempotent: a re-run does not count twice). Call in
    the transaction that writes the request's final state."""
    generation = work if isinstance(work, Generation) else None
    batch = work if isinstance(work, EmbeddingBatch) else None
    UsageRecord.objects.update_or_create(
        generation=generation,
        embedding_batch=batch,
        defaults={
            "user_id": work.user_id,
            "api_key_id": work.api_key_id,
            "model_id": work.model_version.model_id,
            "source": _source(work),
            "kind": work.kind,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
        },
    )


def _source(work: Generation | EmbeddingBatch) -> str:
    if work.priority == Priority.BATCH:
        return UsageRecord.Source.BATCH
    return UsageRecord.Source.API if work.api_key_id else UsageRecord.Source.CHAT


def token_window(user: User) -> Window | None:
    """Today's token quota for ``user`` (None when unlimited); raise LimitExceeded when used up."""
    if user.daily_token_quota is None:
        return None
    now = datetime.now(UTC)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    used = UsageRecord.objects.filter(user=user).since(day_start).total_tokens()
    # Answers still being written may use up to their max_tokens: count them as spent, so a burst
    # of concurrent requests cannot overrun the quota.
    in_flight = Generation.objects.in_flight().filter(user=user).values_list("params", flat=True)
    used += sum(params.get("max_tokens", 0) for params in in_flight)
    reset = int((day_start + timedelta(days=1) - now).total_seconds()) + 1
    window = Window(user.daily_token_quota, max(0, user.daily_token_quota - used), reset)
    if window.exhausted:
        raise LimitExceeded(
            _(
                "Daily token quota reached: %(used)s of %(quota)s tokens used today (UTC). "
                "It resets in %(reset)s s."
            )
            % {"used": used, "quota": user.daily_token_quota, "reset": reset},
            window,
        )
    return window


def quota_pause(user: User) -> str:
    """Why work that waits for room in ``user``'s daily token quota (a batch, an eval run) must
    not start more requests now, in words (at most 300 characters); "" when it may. The quota is
    read again first: an admin may have raised it."""
    user.refresh_from_db(fields=["daily_token_quota"])
    try:
        token_window(user)
    except LimitExceeded as exceeded:
        return exceeded.message[:300]
    return ""


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
