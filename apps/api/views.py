"""The OpenAI-compatible API under /v1. Async views: a request waits on the channel layer for its
generation's deltas (apps.inference.streaming.follow) while a Celery worker produces them."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from functools import wraps
from typing import Any

import numpy as np
from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from apps.accounts.limits import LimitExceeded, Window, request_window, token_window
from apps.accounts.models import ApiKey
from apps.catalog.models import LanguageModel
from apps.catalog.selectors import DEFAULT_CHAT_MODEL
from apps.core.errors import ErrorCode, ServiceError
from apps.inference.models import EmbeddingBatch, Generation
from apps.inference.streaming import embedding_group, follow, wait_finished

from .auth import authenticate
from .errors import GENERATION_FAILURE_STATUS, ApiError
from .openapi import openapi_document
from .schemas import (
    ChatCompletionRequest,
    ClassificationRequest,
    CompletionRequest,
    EmbeddingRequest,
    parse,
)
from .services import (
    classification_start,
    completion_cancel,
    completion_start,
    embedding_start,
)

View = Callable[..., Coroutine[Any, Any, HttpResponseBase]]


def api_view(method: str, *, scope: str | None) -> Callable[[View], View]:
    """Method guard, key authentication and OpenAI-shaped errors for one /v1 endpoint."""

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
                api_key, windows = await sync_to_async(_admit)(request, scope)
            except ApiError as error:
                return error.response()
            try:
                response = await view(request, api_key, *args, **kwargs)
            except ApiError as error:
                response = error.response()
            except ServiceError as error:
                response = ApiError.from_service(error).response()
            for name, value in _limit_headers(windows).items():
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


def _admit(request: HttpRequest, scope: str | None) -> tuple[ApiKey, dict[str, Window | None]]:
    """Authenticate, then count the request against the key's rate limit and, for generation,
    check the account's token quota. Raises ApiError 401/403/429."""
    api_key = authenticate(request, scope=scope)
    windows: dict[str, Window | None] = {}
    try:
        windows["requests"] = request_window(api_key)
        if scope == ApiKey.Scope.INFERENCE:
            windows["tokens"] = token_window(api_key.user)
    except LimitExceeded as exceeded:
        code = ErrorCode.RATE_LIMITED if "requests" not in windows else ErrorCode.QUOTA_EXCEEDED
        windows["requests" if code == ErrorCode.RATE_LIMITED else "tokens"] = exceeded.window
        headers = {"Retry-After": str(exceeded.window.reset_seconds), **_limit_headers(windows)}
        raise ApiError(429, exceeded.message, code=code.value, headers=headers) from None
    return api_key, windows


def _limit_headers(windows: dict[str, Window | None]) -> dict[str, str]:
    headers = {}
    for name, window in windows.items():
        if window is not None:
            headers[f"x-ratelimit-limit-{name}"] = str(window.limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(window.remaining)
            headers[f"x-ratelimit-reset-{name}"] = f"{window.reset_seconds}s"
    return headers


def _json_body(request: HttpRequest) -> Any:
    try:
        raw = request.body
    except RequestDataTooBig:
        raise ApiError(413, "The request body is too large.", code="request_too_large") from None
    try:
        return json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "The request body is not valid JSON.", code="invalid_json") from None


def _model_object(model: LanguageModel) -> dict[str, Any]:
    return {
        "id": model.slug,
        "object": "model",
        "created": int(model.created_at.timestamp()),
        "owned_by": "playground",
    }


@api_view("GET", scope=None)
async def models_list(request: HttpRequest, api_key: ApiKey) -> HttpResponse:
    models = await sync_to_async(lambda: list(LanguageModel.objects.usable_by(api_key.user)))()
    return JsonResponse({"object": "list", "data": [_model_object(m) for m in models]})


@api_view("DELETE", scope=ApiKey.Scope.FINE_TUNING)
async def model_delete(request: HttpRequest, api_key: ApiKey, model_id: str) -> HttpResponse:
    """Delete one of the account's fine-tuned models (OpenAI's ``DELETE /v1/models/{id}``)."""
    from apps.finetuning.services import fine_tuned_model_delete

    def delete() -> None:
        model = (
            LanguageModel.objects.usable_by(api_key.user)
            .filter(slug=model_id, owner=api_key.user)
            .first()
        )
        if model is None:
            raise ApiError(
                404,
                f"The model {model_id!r} is not a fine-tuned model of this account.",
                code="model_not_found",
                param="model",
            )
        fine_tuned_model_delete(model=model)

    await sync_to_async(delete)()
    return JsonResponse({"id": model_id, "object": "model", "deleted": True})


@api_view("GET", scope=None)
async def model_detail(request: HttpRequest, api_key: ApiKey, model_id: str) -> HttpResponse:
    model = await sync_to_async(
        lambda: LanguageModel.objects.usable_by(api_key.user).filter(slug=model_id).first()
    )()
    if model is None:
        raise ApiError(
            404,
            f"The model {model_id!r} does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )
    return JsonResponse(_model_object(model))


@api_view("POST", scope=ApiKey.Scope.INFERENCE)
async def chat_completions(request: HttpRequest, api_key: ApiKey) -> HttpResponseBase:
    body = parse(ChatCompletionRequest, _json_body(request))
    return await _complete(api_key, body, chat=True)


@api_view("POST", scope=ApiKey.Scope.INFERENCE)
async def completions(request: HttpRequest, api_key: ApiKey) -> HttpResponseBase:
    body = parse(CompletionRequest, _json_body(request))
    return await _complete(api_key, body, chat=False)


async def _encoded(batch: EmbeddingBatch) -> EmbeddingBatch:
    """Wait for a worker to finish ``batch``; its failure as an ApiError."""
    batch = await wait_finished(
        embedding_group(batch.pk), lambda: EmbeddingBatch.objects.get(pk=batch.pk)
    )
    if batch.status == EmbeddingBatch.Status.FAILED:
        code = ErrorCode(batch.error_code)
        raise ApiError(
            GENERATION_FAILURE_STATUS[code],
            batch.error_message,
            code=code.value,
            param="input" if code == ErrorCode.CONTEXT_LENGTH_EXCEEDED else None,
        )
    return batch


@api_view("POST", scope=ApiKey.Scope.INFERENCE)
async def classifications(request: HttpRequest, api_key: ApiKey) -> HttpResponseBase:
    """Label texts with one of the account's classifiers (trained on the fine-tuning page)."""
    body = parse(ClassificationRequest, _json_body(request))
    batch = await _encoded(await sync_to_async(classification_start)(api_key=api_key, body=body))
    return JsonResponse(
        {
            "object": "list",
            "model": body.model,
            "data": [
                {"object": "classification", "index": i, **result}
                for i, result in enumerate(batch.results or [])
            ],
            "usage": {"prompt_tokens": batch.prompt_tokens, "total_tokens": batch.prompt_tokens},
        }
    )


@api_view("POST", scope=ApiKey.Scope.INFERENCE)
async def embeddings(request: HttpRequest, api_key: ApiKey) -> HttpResponseBase:
    body = parse(EmbeddingRequest, _json_body(request))
    batch = await _encoded(await sync_to_async(embedding_start)(api_key=api_key, body=body))
    data = []
    for index, encoded in enumerate(batch.vectors or []):
        vector: Any = encoded
        if body.encoding_format == "float":
            vector = np.frombuffer(base64.b64decode(encoded), dtype=np.float32).tolist()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    return JsonResponse(
        {
            "object": "list",
            "data": data,
            "model": body.model,
            "usage": {"prompt_tokens": batch.prompt_tokens, "total_tokens": batch.prompt_tokens},
        }
    )


@require_GET
def openapi_json(request: HttpRequest) -> HttpResponse:
    return JsonResponse(openapi_document(request.build_absolute_uri("/v1")))


@require_GET
def api_docs(request: HttpRequest) -> HttpResponse:
    """The readable API page: endpoints, and curl and Python examples with this site's URL."""
    return render(
        request,
        "api/docs.html",
        {"base_url": request.build_absolute_uri("/v1"), "model": DEFAULT_CHAT_MODEL},
    )


# -- completions -----------------------------------------------------------------------------


def _failure(row: Generation) -> ApiError:
    try:
        code = ErrorCode(row.error_code)
    except ValueError:
        code = ErrorCode.INTERNAL
    param = "messages" if code == ErrorCode.CONTEXT_LENGTH_EXCEEDED else None
    return ApiError(
        GENERATION_FAILURE_STATUS[code],
        row.error_message or "The generation failed.",
        code=code.value,
        param=param,
    )


def _finish_reason(row: Generation) -> str:
    return "length" if row.finish_reason in ("length", "timeout") else "stop"


def _usage(rows: list[Generation]) -> dict[str, int]:
    prompt = rows[0].prompt_tokens or 0  # the n choices share one prompt
    completion = sum(r.completion_tokens for r in rows)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


class _Completion:
    """The ids, names and chunk shapes of one API completion with its ``n`` generations."""

    def __init__(self, generations: list[Generation], model: str, *, chat: bool) -> None:
        self.ids = [str(g.pk) for g in generations]
        self.index = {gid: i for i, gid in enumerate(self.ids)}
        self.chat = chat
        self.model = model
        self.id = ("chatcmpl-" if chat else "cmpl-") + generations[0].pk.hex
        self.created = int(generations[0].created_at.timestamp())
        self.object = "chat.completion" if chat else "text_completion"

    def chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body = {
            "id": self.id,
            "object": self.object + (".chunk" if self.chat else ""),
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n".encode()

    def text_choice(
        self, generation_id: str, text: str, finish: str | None = None
    ) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": self.index[generation_id], "finish_reason": finish}
        if self.chat:
            choice["delta"] = {"content": text} if text else {}
        else:
            choice["text"] = text
            choice["logprobs"] = None
        return choice

    def full(self, texts: dict[str, str], rows: dict[str, Generation]) -> dict[str, Any]:
        choices = []
        for gid in self.ids:
            choice: dict[str, Any] = {
                "index": self.index[gid],
                "finish_reason": _finish_reason(rows[gid]),
                "logprobs": None,
            }
            if self.chat:
                choice["message"] = {"role": "assistant", "content": texts[gid]}
            else:
                choice["text"] = texts[gid]
            choices.append(choice)
        return {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": _usage([rows[gid] for gid in self.ids]),
        }


async def _complete(
    api_key: ApiKey, body: ChatCompletionRequest | CompletionRequest, *, chat: bool
) -> HttpResponseBase:
    generations = await sync_to_async(completion_start)(api_key=api_key, body=body)
    completion = _Completion(generations, body.model, chat=chat)
    events = follow(completion.ids)
    finished: dict[str, Generation] = {}

    async def cancel_unfinished() -> None:
        await events.aclose()
        if len(finished) < len(generations):
            await sync_to_async(completion_cancel)(generations=generations)

    try:
        # Wait for the first event before answering, so that a request the worker rejects (a
        # prompt over the context, say) gets its error status even when it asked for a stream.
        first = await anext(events)
        if first[0] == "done" and first[2].status == Generation.Status.FAILED:
            await cancel_unfinished()
            raise _failure(first[2])
        if not body.stream:
            texts = dict.fromkeys(completion.ids, "")
            event: tuple[str, str, Any] | None = first
            while event is not None:
                kind, gid, value = event
                if kind == "text":
                    texts[gid] += value
                else:
                    if value.status == Generation.Status.FAILED:
                        await cancel_unfinished()
                        raise _failure(value)
                    finished[gid] = value
                event = await anext(events, None)
            return JsonResponse(completion.full(texts, finished))
    except asyncio.CancelledError:  # the client disconnected while waiting
        await cancel_unfinished()
        raise

    async def stream() -> AsyncIterator[bytes]:
        try:
            if chat:
                yield completion.chunk(
                    [
                        {
                            "index": i,
                            "delta": {"role": "assistant", "content": ""},
                            "finish_reason": None,
                            "logprobs": None,
                        }
                        for i in range(len(completion.ids))
                    ]
                )
            event: tuple[str, str, Any] | None = first
            while event is not None:
                kind, gid, value = event
                if kind == "text":
                    yield completion.chunk([completion.text_choice(gid, value)])
                elif value.status == Generation.Status.FAILED:
                    error = _failure(value)
                    yield f"data: {json.dumps(error.body())}\n\n".encode()
                    return
                else:
                    finished[gid] = value
                    yield completion.chunk([completion.text_choice(gid, "", _finish_reason(value))])
                event = await anext(events, None)
            if body.include_usage:
                yield completion.chunk([], usage=_usage([finished[g] for g in completion.ids]))
            yield b"data: [DONE]\n\n"
        finally:
            await cancel_unfinished()

    response = StreamingHttpResponse(stream(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
