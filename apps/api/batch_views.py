"""The Batch API in OpenAI's shape: ``/v1/batches``. Every endpoint needs a key with the
``inference`` scope; another account's batch answers 404, as a missing one does."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.http import Http404, HttpRequest, JsonResponse

from apps.accounts.models import ApiKey

from .batches import batch_cancel, batch_create, batch_object
from .decorators import api_view, json_body, list_limit, list_page
from .errors import ApiError
from .models import Batch
from .selectors import access_batch, batches_for
from .services import not_found

SCOPE = ApiKey.Scope.INFERENCE
CREATE_FIELDS = {"input_file_id", "endpoint", "completion_window", "metadata"}


def _batch(api_key: ApiKey, batch_id: str) -> Batch:
    try:
        return access_batch(api_key.user, batch_id)
    except Http404:
        raise not_found("batch", batch_id) from None


# A batch is accepted while the quota is used up: it waits, paused, until there is room.
@api_view("POST", scope=SCOPE, quota=False)
async def batches_create(request: HttpRequest, api_key: ApiKey) -> JsonResponse:
    body = json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    unknown = sorted(set(body) - CREATE_FIELDS)
    if unknown:
        raise ApiError(400, f"Unknown parameter: {unknown[0]}", param=unknown[0])
    for name in ("input_file_id", "endpoint", "completion_window"):
        if not isinstance(body.get(name), str):
            raise ApiError(400, f"Missing required parameter: {name}", param=name)

    def create() -> dict[str, Any]:
        batch = batch_create(
            api_key=api_key,
            input_file_id=body["input_file_id"],
            endpoint=body["endpoint"],
            completion_window=body["completion_window"],
            metadata=body.get("metadata"),
        )
        return batch_object(Batch.objects.get(pk=batch.pk))

    return JsonResponse(await sync_to_async(create)())


@api_view("GET", scope=SCOPE, quota=False)
async def batches_list(request: HttpRequest, api_key: ApiKey) -> JsonResponse:
    limit = list_limit(request)
    after = request.GET.get("after")

    def page() -> dict[str, Any]:
        return list_page(
            batches_for(api_key.user),
            id_of=lambda b: b.openai_id,
            shape=batch_object,
            after=after,
            limit=limit,
            what="batch",
        )

    return JsonResponse(await sync_to_async(page)())


@api_view("GET", scope=SCOPE, quota=False)
async def batch_detail(request: HttpRequest, api_key: ApiKey, batch_id: str) -> JsonResponse:
    return JsonResponse(batch_object(await sync_to_async(_batch)(api_key, batch_id)))


@api_view("POST", scope=SCOPE, quota=False)
async def batch_cancel_view(request: HttpRequest, api_key: ApiKey, batch_id: str) -> JsonResponse:
    def cancel() -> dict[str, Any]:
        return batch_object(batch_cancel(batch=_batch(api_key, batch_id)))

    return JsonResponse(await sync_to_async(cancel)())
