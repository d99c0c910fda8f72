"""Middleware: 503 while the database or Redis is away (instead of a 500 that looks like a bug),
the Content-Security-Policy header, and the shape of a middleware that looks at every answer."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.decorators import sync_and_async_middleware

from .queues import BROKER_ERRORS

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5

After = Callable[[HttpRequest, HttpResponse, float], None]


def response_middleware(after: After) -> Callable[[Any], Any]:
    """A middleware, sync and async (so async views stay async), that calls ``after(request,
    response, started)`` on every answer, ``started`` being ``time.monotonic()`` on arrival."""

    @sync_and_async_middleware
    def factory(get_response: Any) -> Any:
        if iscoroutinefunction(get_response):

            async def middleware(request: HttpRequest) -> HttpResponse:
                started = time.monotonic()
                response = await get_response(request)
                after(request, response, started)
                return response  # type: ignore[no-any-return]

        else:

            def middleware(request: HttpRequest) -> HttpResponse:  # type: ignore[misc]
                started = time.monotonic()
                response = get_response(request)
                after(request, response, started)
                return response  # type: ignore[no-any-return]

        return middleware

    return factory


class ServiceUnavailableMiddleware:
    """A view that fails because the database or Redis (the broker, cache and channel layer)
    cannot be reached answers 503 with Retry-After.

    Django checks database connections before reuse (CONN_HEALTH_CHECKS) and Redis clients
    reconnect, so once the service is back the next request works without a restart.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, OperationalError | InterfaceError):
            code, what = "database_unavailable", "its database"
        elif isinstance(exception, BROKER_ERRORS):
            code, what = "broker_unavailable", "its message broker"
        else:
            return None
        logger.warning("%s for %s: %r", code, request.path, exception)
        message = f"The service cannot reach {what} just now; try again in a few seconds."
        response: HttpResponse
        if request.path.startswith("/v1/"):
            response = JsonResponse(
                {
                    "error": {
                        "message": message,
                        "type": "service_unavailable",
                        "code": code,
                        "param": None,
                    }
                },
                status=503,
            )
        else:
            response = HttpResponse(message, status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response


# Scripts and styles from this origin only (inline style attributes allowed: templates use a
# few), no plugins, no framing, images from this origin or data: URLs, connections (fetch, the
# WebSocket) to this origin. Model output is sanitised Markdown; this is the second line.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)


def _set_policy(request: HttpRequest, response: HttpResponse, started: float) -> None:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)


# Adds the Content-Security-Policy header to every answer that does not set its own.
ContentSecurityPolicyMiddleware = response_middleware(_set_policy)
