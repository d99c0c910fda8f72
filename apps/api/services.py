"""The API's requests turned into the platform's work: the same generations, queue and engine as
the chat, with OpenAI's defaults and names. Nothing is written for a bad request."""

from __future__ import annotations

from django.db import transaction
from django.http import Http404

from apps.accounts.models import ApiKey
from apps.catalog.models import LanguageModel
from apps.catalog.selectors import access_model, active_version
from apps.core.errors import ErrorCode, ServiceError
from apps.finetuning.models import FineTuningJob
from apps.finetuning.schemas import Hyperparameters
from apps.finetuning.selectors import access_dataset, access_job
from apps.finetuning.services import fine_tuned_model_delete, finetune_job_create
from apps.inference.models import EmbeddingBatch, Generation
from apps.inference.services import (
    classification_start,
    embedding_start,
    generation_cancel,
    generation_start,
    sampling_params_for,
)

from .errors import ApiError
from .schemas import (
    ChatCompletionRequest,
    ClassificationRequest,
    CompletionRequest,
    EmbeddingRequest,
    FineTuningJobRequest,
)

# What the API takes where a request and the version's defaults leave a parameter out.
OPENAI_DEFAULTS = {"temperature": 1.0}
EMBEDDING_DIMENSIONS = {"all-minilm-l6-v2": 384}


def model_for(api_key: ApiKey, slug: str) -> LanguageModel:
    """The model ``slug`` for the key's account; ServiceError (404) when it has none by that id."""
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
    """Validate and enqueue ``body.n`` generations for the key's account. Precondition: the key
    allows inference."""
    model = model_for(api_key, body.model)
    chat = isinstance(body, ChatCompletionRequest)
    expected = (
        (LanguageModel.Task.CHAT,)
        if chat
        else (LanguageModel.Task.CHAT, LanguageModel.Task.COMPLETION)
    )
    if model.task not in expected:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            f"The model {model.slug!r} is a {model.task} model; it cannot be used here.",
            param="model",
        )
    version = active_version(model)
    params = sampling_params_for(version, body.sampling(), fallback=OPENAI_DEFAULTS)
    messages = body.engine_messages() if isinstance(body, ChatCompletionRequest) else None
    return generation_start(
        user=api_key.user,
        version=version,
        params=params,
        messages=messages,
        prompt="" if isinstance(body, ChatCompletionRequest) else body.prompt,
        api_key=api_key,
        n=body.n,
        end_user=body.user or "",
    )


def completion_cancel(*, generations: list[Generation]) -> None:
    """The client went away: stop whatever is still running."""
    for generation in generations:
        generation_cancel(generation=generation)


def classifications_start(*, api_key: ApiKey, body: ClassificationRequest) -> EmbeddingBatch:
    """Validate and enqueue a classification request."""
    model = model_for(api_key, body.model)
    return classification_start(
        user=api_key.user, model=model, inputs=body.inputs(), api_key=api_key
    )


def embeddings_start(*, api_key: ApiKey, body: EmbeddingRequest) -> EmbeddingBatch:
    """Validate and enqueue an embeddings request."""
    model = model_for(api_key, body.model)
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
    return embedding_start(
        user=api_key.user, version=active_version(model), inputs=inputs, api_key=api_key
    )


def fine_tuned_model_retire(*, api_key: ApiKey, slug: str) -> None:
    """``DELETE /v1/models/{id}`` for one of the account's fine-tuned models."""
    try:
        model = access_model(api_key.user, slug)
    except Http404:
        model = None
    if model is None or model.owner_id != api_key.user.pk:
        raise ApiError(
            404,
            f"The model {slug!r} is not a fine-tuned model of this account.",
            code="model_not_found",
            param="model",
        )
    fine_tuned_model_delete(model=model)


def not_found(what: str, value: str, param: str | None = None) -> ApiError:
    return ApiError(404, f"No {what} {value!r} exists for this account.", param=param)


def fine_tuning_job_start(*, api_key: ApiKey, body: FineTuningJobRequest) -> FineTuningJob:
    """``POST /v1/fine_tuning/jobs``: the body's model, files and settings checked, by the names
    the API uses, then the job queued."""
    user = api_key.user
    try:
        model = access_model(user, body.model)
    except Http404:
        raise not_found("model", body.model, "model") from None
    files = {}
    for param in ("training_file", "validation_file"):
        file_id = getattr(body, param)
        if file_id is None:
            continue
        try:
            files[param] = access_dataset(user, file_id)
        except Http404:
            raise not_found("file", file_id, param) from None
    values = dict(body.hyperparameters)
    if body.seed is not None:
        values["seed"] = body.seed
    try:
        hyperparameters = Hyperparameters.parse(values)
    except ServiceError as error:
        # The API nests the settings under "hyperparameters" (all but the seed): say so.
        name = error.param or ""
        param = "seed" if name == "seed" else f"hyperparameters.{name}"
        raise ServiceError(
            error.code, error.message.replace(f" {name}", f" {param}", 1), param=param
        ) from None
    # Read back before the transaction commits (and the task is sent): the answer shows the job
    # as it was created, queued, however quick the training worker is.
    with transaction.atomic():
        job = finetune_job_create(
            owner=user,
            base_version=active_version(model),
            training_file=files["training_file"],
            validation_file=files.get("validation_file"),
            method=body.method,
            hyperparameters=hyperparameters,
            suffix=body.suffix or "",
        )
        return access_job(user, job.pk)
