"""Per-key request rate limits and per-account daily token quotas.

Rate limits count requests in fixed one-minute windows in the cache (Redis in production, so all
web processes share the count). Quotas compare today's usage rows (UTC), plus the max_tokens of
answers still in flight, with the account's quota.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.cache import cache

from .models import ApiKey, User


@dataclass(frozen=True)
class Window:
    limit: int
    remaining: int
    reset_seconds: int

    @property
    def exhausted(self) -> bool:
        return self.remaining <= 0


class LimitExceeded(Exception):
    def __init__(self, message: str, window: Window) -> None:
        super().__init__(message)
        self.message = message
        self.window = window


def request_window(api_key: ApiKey) -> Window:
    """Count one request for ``api_key``; raise LimitExceeded when over its per-minute limit."""
    limit = api_key.requests_per_minute or settings.API_REQUESTS_PER_MINUTE
    now = time.time()
    minute = int(now // 60)
    key = f"ratelimit:{api_key.pk}:{minute}"
    cache.add(key, 0, timeout=120)
    count = cache.incr(key)
    window = Window(limit, max(0, limit - count), 60 - int(now % 60))
    if count > limit:
        raise LimitExceeded(
            f"Rate limit reached: this key may make {limit} requests per minute. "
            f"Try again in {window.reset_seconds} s.",
            window,
        )
    return window


def token_window(user: User) -> Window | None:
    """Today's token quota for ``user`` (None when unlimited); raise LimitExceeded when used up."""
    if user.daily_token_quota is None:
        return None
    from apps.inference.models import Generation, UsageRecord

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
            f"Daily token quota reached: {used} of {user.daily_token_quota} tokens used today "
            f"(UTC). It resets in {reset} s.",
            window,
        )
    return window
