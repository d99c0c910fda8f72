"""What every /v1 endpoint shares: the method guard, key authentication, rate limits and quotas
with their headers, errors in OpenAI's shape, and reading a JSON body."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Sequence
from functools import wraps
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from apps.accounts.limits import LimitExceeded, Window, request_window
from apps.accounts.models import ApiKey
from apps.core.errors import ErrorCode, ServiceError, quoted
from apps.inference.usage import token_window

from .auth import authenticate
from .errors import ApiError

View = Callable[..., Coroutine[Any, Any, HttpResponseBase]]
T = TypeVar("T")


def api_view(
    method: str, *, scope: str | None, quota: bool | None = None
) -> Callable[[View], View]:
    """Method guard, key authentication and OpenAI-shaped errors for one /v1 endpoint. The view
    gets the request and the key (``view(request, api_key, **kwargs)``). ``quota``: whether the
    account's daily token quota must have room (by default, for the inference scope: an endpoint
    that only reads or stops work, such as fetching a batch, says False)."""
    checks_quota = scope == ApiKey.Scope.INFERENCE if quota is None else quota

    def decorate(view: View) -> View:
        @csrf_exempt
        @wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            try:
                if request.method != method:
                    raise ApiError(
                        405,
                        f"Use {method} for this endpoint.",
                        code="method_not_allowed",
                        headers={"Allow": method},
                    )
                api_key, windows = await sync_to_async(_admit)(request, scope, checks_quota)
            except ApiError as error:
                return error.response()
            try:
                response = await view(request, api_key, *args, **kwargs)
            except ApiError as error:
                response = error.response()
            except ServiceError as error:
                response = ApiError.from_service(error).response()
            for name, value in limit_headers(windows).items():
                response[name] = value
            return response

        return wrapper  # type: ignore[return-value]

    return decorate


def by_method(**views: View) -> View:
    """One URL with an endpoint per method (``GET=..., POST=...``); others answer 405."""
    allowed = ", ".join(views)

    @csrf_exempt
    async def dispatch(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        view = views.get(request.method or "")
        if view is None:
            return ApiError(
                405,
                f"Use {allowed} for this endpoint.",
                code="method_not_allowed",
                headers={"Allow": allowed},
            ).response()
        return await view(request, *args, **kwargs)

    return dispatch  # type: ignore[return-value]


def _admit(
    request: HttpRequest, scope: str | None, quota: bool
) -> tuple[ApiKey, dict[str, Window | None]]:
    """Authenticate, then count the request against the key's rate limit and, with ``quota``,
    check the account's token quota. Raises ApiError 401/403/429."""
    api_key = authenticate(request, scope=scope)
    windows: dict[str, Window | None] = {}
    try:
        windows["requests"] = request_window(api_key)
        if quota:
            windows["tokens"] = token_window(api_key.user)
    except LimitExceeded as exceeded:
        code = ErrorCode.RATE_LIMITED if "requests" not in windows else ErrorCode.QUOTA_EXCEEDED
        windows["requests" if code == ErrorCode.RATE_LIMITED else "tokens"] = exceeded.window
        headers = {"Retry-After": str(exceeded.window.reset_seconds), **limit_headers(windows)}
        raise ApiError(429, exceeded.message, code=code.value, headers=headers) from None
    return api_key, windows


def limit_headers(windows: dict[str, Window | None]) -> dict[str, str]:
    headers = {}
    for name, window in windows.items():
        if window is not None:
            headers[f"x-ratelimit-limit-{name}"] = str(window.limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(window.remaining)
            headers[f"x-ratelimit-reset-{name}"] = f"{window.reset_seconds}s"
    return headers


def json_body(request: HttpRequest) -> Any:
    """The request's body as JSON; ApiError 413 when too large, 400 when not JSON."""
    try:
        raw = request.body
    except RequestDataTooBig:
        raise ApiError(413, "The request body is too large.", code="request_too_large") from None
    try:
        return json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "The request body is not valid JSON.", code="invalid_json") from None


MAX_LIST = 100  # the most items one page of a list endpoint holds


def list_limit(request: HttpRequest, default: int = 20) -> int:
    """A list endpoint's ``limit`` query parameter; ApiError 400 unless it is 1 to MAX_LIST."""
    raw = request.GET.get("limit", str(default))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIST:
        raise ApiError(400, f"limit must be a whole number from 1 to {MAX_LIST}.", param="limit")
    return int(raw)


def list_page(
    items: Sequence[T],
    *,
    id_of: Callable[[T], str],
    shape: Callable[[T], dict[str, Any]],
    after: str | None,
    limit: int,
    what: str,
) -> dict[str, Any]:
    """One page of a list endpoint in OpenAI's cursor shape: ``limit`` of ``items`` after the
    one whose id is ``after`` (ApiError 400 when there is none by that id), with ``has_more``
    and the first and last ids, as the SDK's pagination reads them."""
    if after:
        ids = [id_of(item) for item in items]
        if after not in ids:
            raise ApiError(400, f"There is no {what} {quoted(after)} to list after.", param="after")
        items = items[ids.index(after) + 1 :]
    data = [shape(item) for item in items[:limit]]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(items) > limit,
    }
