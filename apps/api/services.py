"""Starting completions for the API: the same generations, queue and engine as the chat."""

from __future__ import annotations

from django.db import transaction
from django.http import Http404

from apps.accounts.models import ApiKey
from apps.catalog.models import LanguageModel
from apps.catalog.selectors import access_model, active_version
from apps.core.errors import ErrorCode, ServiceError
from apps.inference.models import EmbeddingBatch, Generation
from apps.inference.protocol import SamplingParams
from apps.inference.services import embedding_create, generation_cancel, generation_create

from .schemas import (
    ChatCompletionRequest,
    ClassificationRequest,
    CompletionRequest,
    EmbeddingRequest,
)


def _model_for(api_key: ApiKey, slug: str) -> LanguageModel:
    try:
        return access_model(api_key.user, slug)
    except Http404:
        raise ServiceError(
            ErrorCode.MODEL_NOT_FOUND,
            f"The model {slug!r} does not exist or you do not have access to it.",
            param="model",
        ) from None


def completion_start(
    *, api_key: ApiKey, body: ChatCompletionRequest | CompletionRequest
) -> list[Generation]:
    """Validate and enqueue ``body.n`` generations for the key's account; nothing is written on a
    bad request. Precondition: the key allows inference."""
    model = _model_for(api_key, body.model)
    is_chat = isinstance(body, ChatCompletionRequest)
    expected = (
        LanguageModel.Task.CHAT
        if is_chat
        else (LanguageModel.Task.CHAT, LanguageModel.Task.COMPLETION)
    )
    if model.task not in expected:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            f"The model {model.slug!r} is a {model.task} model; it cannot be used here.",
            param="model",
        )
    version = active_version(model)
    # What the request leaves out comes from the version's defaults, then OpenAI's (temperature 1).
    params = SamplingParams.parse({"temperature": 1.0, **version.default_params, **body.sampling()})
    messages = None
    if isinstance(body, ChatCompletionRequest):
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in body.messages
        ]
    with transaction.atomic():
        generations = []
        for i in range(body.n):
            choice_params = params
            if params.seed is not None and i:
                choice_params = params.model_copy(update={"seed": params.seed + i})
            generations.append(
                generation_create(
                    user=api_key.user,
                    model_version=version,
                    params=choice_params,
                    messages=messages,
                    prompt="" if messages is not None else body.prompt,  # type: ignore[union-attr]
                    api_key=api_key,
                )
            )
    return generations


def completion_cancel(*, generations: list[Generation]) -> None:
    """The client went away: stop whatever is still running."""
    for generation in generations:
        generation_cancel(generation=generation)


EMBEDDING_DIMENSIONS = {"all-minilm-l6-v2": 384}


def classification_start(*, api_key: ApiKey, body: ClassificationRequest) -> EmbeddingBatch:
    """Validate and enqueue a classification request; nothing is written on a bad request."""
    model = _model_for(api_key, body.model)
    if model.task != LanguageModel.Task.CLASSIFICATION:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            f"The model {model.slug!r} is a {model.task} model, not a classifier. Train one on "
            "the fine-tuning page.",
            param="model",
        )
    inputs = body.inputs()
    with transaction.atomic():
        return embedding_create(
            user=api_key.user,
            model_version=active_version(model),
            inputs=inputs,
            api_key=api_key,
            kind=EmbeddingBatch.Kind.CLASSIFICATION,
        )


def embedding_start(*, api_key: ApiKey, body: EmbeddingRequest) -> EmbeddingBatch:
    """Validate and enqueue an embeddings request; nothing is written on a bad request."""
    model = _model_for(api_key, body.model)
    if model.task != LanguageModel.Task.EMBEDDINGS:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            f"The model {model.slug!r} is a {model.task} model, not an embeddings model.",
            param="model",
        )
    inputs = body.inputs()
    native = EMBEDDING_DIMENSIONS.get(model.slug)
    if body.dimensions is not None and body.dimensions != native:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            f"The model {model.slug!r} gives {native}-dimensional embeddings; "
            "dimensions cannot be changed.",
            param="dimensions",
        )
    with transaction.atomic():
        return embedding_create(
            user=api_key.user, model_version=active_version(model), inputs=inputs, api_key=api_key
        )
