"""Per-key request rate limits, and the window shape that quotas share (the daily token quota is
``apps.inference.usage.token_window``: it reads usage rows).

Rate limits count requests in fixed one-minute windows in the cache (Redis in production, so all
web processes share the count).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from .models import ApiKey


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
