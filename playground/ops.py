"""Health and metrics endpoints for load balancers, orchestrators and Prometheus."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.core.metrics import REGISTRY
from apps.core.models import Worker
from apps.core.queues import Queue


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and answering. Touches nothing else, so it stays cheap."""
    return JsonResponse({"status": "ok"})


@require_GET
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """Ready to serve: the database answers, the broker answers, and at least one inference
    worker is live (its heartbeat is recent). 503 with the reasons otherwise."""
    checks = {"database": _database(), "broker": _broker()}
    checks["inference_workers"] = _workers() if checks["database"] == "ok" else "unknown"
    failing = {name: result for name, result in checks.items() if result != "ok"}
    if failing:
        response = JsonResponse(
            {
                "status": "unavailable",
                "checks": checks,
                "reason": "; ".join(f"{name}: {result}" for name, result in failing.items()),
            },
            status=503,
        )
        response["Retry-After"] = "5"
        return response
    return JsonResponse({"status": "ready", "checks": checks})


@require_GET
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format. For staff sessions, or ``Authorization: Bearer <METRICS_TOKEN>``."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    if not _may_scrape(request):
        return HttpResponse(
            "Sign in as staff, or send Authorization: Bearer <METRICS_TOKEN>.\n",
            status=401,
            content_type="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)


def _may_scrape(request: HttpRequest) -> bool:
    if request.user.is_authenticated and request.user.is_staff:
        return True
    token = settings.METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    return bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def _database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        return f"unreachable ({type(exc).__name__})"
    return "ok"


def _broker() -> str:
    url = settings.CELERY_BROKER_URL
    if url.startswith("memory://"):
        return "ok"  # the embedded broker lives in this process
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping()
    except redis.RedisError as exc:
        return f"unreachable ({type(exc).__name__})"
    return "ok"


def _workers() -> str:
    if not Worker.objects.serving(Queue.INFERENCE):
        lost = settings.WORKER_LOST_SECONDS
        return f"no live inference worker (no heartbeat in the last {lost:g} s)"
    return "ok"
