"""Prometheus metrics for ``/metrics``.

Two sources:
- this web process counts the HTTP requests it answered (``RequestMetricsMiddleware``); scrape
  each web process for those, as usual with Prometheus;
- everything else is read at scrape time from the database, so any web process gives the same
  answer: queue depth, generations in flight and fine-tuning jobs by state from their rows, and
  each worker's own counters and histograms (tokens, time to first token, time per token) from
  the figures its heartbeat carries, labelled by worker.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

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


class RequestMetricsMiddleware:
    """Counts each request under its URL name (never the raw path, which would hold ids). Sync
    and async, so the API's async views stay async."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        started = time.monotonic()
        response = self.get_response(request)
        _count(request, response, started)
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        started = time.monotonic()
        response = await self.get_response(request)
        _count(request, response, started)
        return response  # type: ignore[no-any-return]


def _count(request: HttpRequest, response: HttpResponse, started: float) -> None:
    match = request.resolver_match
    endpoint = (match.url_name or match.view_name) if match else "unmatched"
    status = str(response.status_code)
    HTTP_REQUESTS.labels(endpoint, request.method or "", status).inc()
    HTTP_SECONDS.labels(endpoint).observe(time.monotonic() - started)
    if response.status_code >= 400:
        HTTP_ERRORS.labels(endpoint, status).inc()


class PlatformCollector(Collector):
    """The figures read from the database at each scrape."""

    def collect(self) -> Iterator[Any]:
        from django.db.models import Count

        from apps.finetuning.models import FineTuningJob
        from apps.inference.models import Generation, Worker

        depth = GaugeMetricFamily(
            "playground_queue_depth", "Requests and jobs waiting for a worker.", labels=["queue"]
        )
        depth.add_metric(
            ["inference"], Generation.objects.filter(status=Generation.Status.QUEUED).count()
        )
        depth.add_metric(
            ["training"], FineTuningJob.objects.filter(status=FineTuningJob.Status.QUEUED).count()
        )
        yield depth
        yield GaugeMetricFamily(
            "playground_generations_in_flight",
            "Generations a worker is running now.",
            value=Generation.objects.filter(status=Generation.Status.RUNNING).count(),
        )
        jobs = GaugeMetricFamily(
            "playground_finetune_jobs", "Fine-tuning jobs by state.", labels=["state"]
        )
        counted = dict(
            FineTuningJob.objects.values_list("status").annotate(n=Count("id")).order_by()
        )
        for state in FineTuningJob.Status.values:
            jobs.add_metric([state], counted.get(state, 0))
        yield jobs
        yield from _worker_metrics(list(Worker.objects.all()))


def _worker_metrics(workers: Iterable[Any]) -> Iterator[Any]:
    state = GaugeMetricFamily(
        "playground_worker_up",
        "1 for a live worker, 0 for a lost or stopped one.",
        labels=["worker"],
    )
    in_flight = GaugeMetricFamily(
        "playground_worker_requests_in_flight", "Requests a worker is serving.", labels=["worker"]
    )
    memory = GaugeMetricFamily(
        "playground_worker_memory_bytes", "A worker's resident memory.", labels=["worker"]
    )
    models = GaugeMetricFamily(
        "playground_worker_models_bytes", "What a worker's loaded models take.", labels=["worker"]
    )
    tokens = CounterMetricFamily(
        "playground_tokens_generated", "Tokens generated by a worker.", labels=["worker"]
    )
    prompt = CounterMetricFamily(
        "playground_prompt_tokens", "Prompt tokens read by a worker.", labels=["worker"]
    )
    finished = CounterMetricFamily(
        "playground_generations",
        "Generations a worker finished, by final status.",
        labels=["worker", "status"],
    )
    ttft = HistogramMetricFamily(
        "playground_time_to_first_token_seconds",
        "From a request's arrival to its first token.",
        labels=["worker"],
    )
    per_token = HistogramMetricFamily(
        "playground_time_per_output_token_seconds",
        "Time between tokens after the first.",
        labels=["worker"],
    )
    for worker in workers:
        name = worker.hostname
        state.add_metric([name], 1 if worker.state == "live" else 0)
        in_flight.add_metric([name], worker.in_flight)
        memory.add_metric([name], worker.memory_bytes)
        models.add_metric([name], worker.models_bytes)
        figures = worker.metrics or {}
        if not figures:
            continue  # a training worker: no inference figures
        tokens.add_metric([name], figures["tokens_generated"])
        prompt.add_metric([name], figures["prompt_tokens"])
        for status, count in sorted(figures["generations"].items()):
            finished.add_metric([name, status], count)
        for family, key in ((ttft, "ttft_seconds"), (per_token, "token_seconds")):
            histogram = figures[key]
            family.add_metric([name], _buckets(histogram), histogram["sum"])
    yield from (state, in_flight, memory, models, tokens, prompt, finished, ttft, per_token)


def _buckets(histogram: dict[str, Any]) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs, +Inf last, from per-bucket counts."""
    buckets, total = [], 0
    for bound, count in zip([*histogram["bounds"], float("inf")], histogram["counts"], strict=True):
        total += count
        buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
    return buckets


REGISTRY.register(PlatformCollector())
