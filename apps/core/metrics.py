"""Prometheus metrics for ``/metrics``: the registry, and what this web process counts itself,
the HTTP requests it answered (``RequestMetricsMiddleware``; scrape each web process for those, as
usual with Prometheus). The figures read from the database are ``playground.metrics``'s."""

from __future__ import annotations

import time

from django.http import HttpRequest, HttpResponse
from prometheus_client import CollectorRegistry, Counter, Histogram

from .middleware import response_middleware

REGISTRY = CollectorRegistry()

HTTP_REQUESTS = Counter(
    "playground_http_requests",
    "HTTP requests answered by this web process, by endpoint (URL name), method and status.",
    ["endpoint", "method", "status"],
    registry=REGISTRY,
)
HTTP_ERRORS = Counter(
    "playground_http_errors",
    "HTTP answers with a 4xx or 5xx status, by endpoint and status.",
    ["endpoint", "status"],
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "playground_http_request_duration_seconds",
    "Time to answer an HTTP request (for streams: to the start of the answer), by endpoint.",
    ["endpoint"],
    registry=REGISTRY,
)


def _count(request: HttpRequest, response: HttpResponse, started: float) -> None:
    match = request.resolver_match
    endpoint = (match.url_name or match.view_name) if match else "unmatched"
    status = str(response.status_code)
    HTTP_REQUESTS.labels(endpoint, request.method or "", status).inc()
    HTTP_SECONDS.labels(endpoint).observe(time.monotonic() - started)
    if response.status_code >= 400:
        HTTP_ERRORS.labels(endpoint, status).inc()


# Counts each request under its URL name (never the raw path, which would hold ids).
RequestMetricsMiddleware = response_middleware(_count)
