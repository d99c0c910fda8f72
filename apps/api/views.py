"""The OpenAI-compatible API under /v1: thin async views, each parsing its body and calling one
service; the shared guard is ``decorators.api_view``, the answers' shapes ``serving``."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.views.decorators.http import require_GET

from apps.accounts.models import ApiKey
from apps.catalog.models import LanguageModel
from apps.catalog.selectors import DEFAULT_CHAT_MODEL, usable_models

from .decorators import api_view, json_body, list_limit
from .errors import ApiError
from .models import StoredResponse
from .openapi import openapi_document
from .responses import input_items_page, response_object, serve_response
from .schemas import (
    ChatCompletionRequest,
    ClassificationRequest,
    CompletionRequest,
    EmbeddingRequest,
    ResponseRequest,
    parse,
)
from .selectors import access_response
from .services import (
    classifications_start,
    completion_start,
    embeddings_start,
    fine_tuned_model_retire,
    model_for,
    not_found,
    response_cancel,
    response_create,
    response_delete,
)
from .serving import embeddings_body, encoded, serve_completion


def _model_object(model: LanguageModel) -> dict[str, Any]:
    return {
        "id": model.slug,
        "object": "model",
        "created": int(model.created_at.timestamp()),
        "owned_by": "playground",
    }


@api_view("GET", scope=None)
async def models_list(request: HttpRequest, api_key: ApiKey) -> HttpResponse:
    models = await sync_to_async(usable_models)(api_key.user)
    return JsonResponse({"object": "list", "data": [_model_object(m) for m in models]})


@api_view("DELETE", scope=ApiKey.Scope.FINE_TUNING)
async def model_delete(request: HttpRequest, api_key: ApiKey, model_id: str) -> HttpResponse:
    """Delete one of the account's fine-tuned models (OpenAI's ``DELETE /v1/models/{id}``)."""
    await sync_to_async(fine_tuned_model_retire)(api_key=api_key, slug=model_id)
    return JsonResponse({"id": model_id, "object": "model", "deleted": True})


@api_view("GET", scope=None)
async def model_detail(request: HttpRequest, api_key: ApiKey, model_id: str) -> HttpResponse:
    return JsonResponse(_model_object(await sync_to_async(model_for)(api_key.user, model_id)))


@api_view("POST", scope=ApiKey.Scope.INFERENCE)
async def chat_completions(request: HttpRequest, api_key: ApiKey) -> HttpResponseBase:
    return await _complete(api_key, parse(ChatCompletionRequest, json_body(request)))


@api_view("POST", scope=ApiKey.Scope.INFERENCE)
async def completions(request: HttpRequest, api_key: ApiKey) -> HttpResponseBase:
    return await _complete(api_key, parse(CompletionRequest, json_body(request)))


async def _complete(
    api_key: ApiKey, body: ChatCompletionRequest | CompletionRequest
) -> HttpResponseBase:
    generations = await sync_to_async(completion_start)(
        user=api_key.user, api_key=api_key, body=body
    )
    return await serve_completion(
        generations,
        model=body.model,
        chat=isinstance(body, ChatCompletionRequest),
        stream=body.stream,
        include_usage=body.include_usage,
        echo=body.prompt if isinstance(body, CompletionRequest) and body.echo else "",
        tools={f.name for f in body.functions()}
        if isinstance(body, ChatCompletionRequest)
        else set(),
    )


@api_view("POST", scope=ApiKey.Scope.INFERENCE)
async def classifications(request: HttpRequest, api_key: ApiKey) -> HttpResponseBase:
    """Label texts with one of the account's classifiers (trained on the fine-tuning page)."""
    body = parse(ClassificationRequest, json_body(request))
    batch = await encoded(await sync_to_async(classifications_start)(api_key=api_key, body=body))
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
    body = parse(EmbeddingRequest, json_body(request))
    started = await sync_to_async(embeddings_start)(user=api_key.user, api_key=api_key, body=body)
    batch = await encoded(started)
    return JsonResponse(embeddings_body(batch, body))


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


# -- the Responses API ------------------------------------------------------------------------
@api_view("POST", scope=ApiKey.Scope.INFERENCE)
async def responses_create(request: HttpRequest, api_key: ApiKey) -> HttpResponseBase:
    body = parse(ResponseRequest, json_body(request))
    stored = await sync_to_async(response_create)(api_key=api_key, body=body)
    return await serve_response(stored, stream=body.stream)


def _stored(api_key: ApiKey, value: str) -> StoredResponse:
    try:
        return access_response(api_key.user, value)
    except Http404:
        raise not_found("response", value) from None


@api_view("GET", scope=ApiKey.Scope.INFERENCE, quota=False)
async def response_detail(request: HttpRequest, api_key: ApiKey, response_id: str) -> HttpResponse:
    stored = await sync_to_async(_stored)(api_key, response_id)
    return JsonResponse(response_object(stored, stored.generation))


@api_view("DELETE", scope=ApiKey.Scope.INFERENCE, quota=False)
async def response_delete_view(
    request: HttpRequest, api_key: ApiKey, response_id: str
) -> HttpResponse:
    await sync_to_async(response_delete)(api_key=api_key, value=response_id)
    return JsonResponse({"id": response_id, "object": "response", "deleted": True})


@api_view("POST", scope=ApiKey.Scope.INFERENCE, quota=False)
async def response_cancel_view(
    request: HttpRequest, api_key: ApiKey, response_id: str
) -> HttpResponse:
    stored = await sync_to_async(response_cancel)(api_key=api_key, value=response_id)
    return JsonResponse(response_object(stored, stored.generation))


@api_view("GET", scope=ApiKey.Scope.INFERENCE, quota=False)
async def response_input_items(
    request: HttpRequest, api_key: ApiKey, response_id: str
) -> HttpResponse:
    order = request.GET.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ApiError(400, 'order must be "asc" or "desc".', param="order")
    limit = list_limit(request)
    stored = await sync_to_async(_stored)(api_key, response_id)
    page = input_items_page(stored, order=order, limit=limit, after=request.GET.get("after"))
    return JsonResponse(page)
