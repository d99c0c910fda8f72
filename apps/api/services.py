"""The API's requests turned into the platform's work: the same generations, queue and engine as
the chat, with OpenAI's defaults and names. Nothing is written for a bad request."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import Http404

from apps.accounts.models import ApiKey, User
from apps.catalog.models import LanguageModel, ModelVersion
from apps.catalog.selectors import access_model, active_version
from apps.core.errors import ErrorCode, ServiceError, quoted
from apps.evals.selectors import access_eval_set
from apps.finetuning.models import FineTuningJob
from apps.finetuning.schemas import Hyperparameters
from apps.finetuning.selectors import access_dataset, access_job
from apps.finetuning.services import fine_tuned_model_delete, finetune_job_create
from apps.inference.models import EmbeddingBatch, Generation, Priority
from apps.inference.protocol import SamplingParams
from apps.inference.services import (
    classification_start,
    embedding_start,
    generation_cancel,
    generation_start,
    sampling_params_for,
)
from apps.inference.tools import answer_calls

from .errors import ApiError
from .models import StoredResponse
from .schemas import (
    ChatCompletionRequest,
    ClassificationRequest,
    CompletionRequest,
    EmbeddingRequest,
    FineTuningJobRequest,
    ResponseRequest,
)
from .selectors import access_response

# What the API takes where a request and the version's defaults leave a parameter out.
OPENAI_DEFAULTS = {"temperature": 1.0}
EMBEDDING_DIMENSIONS = {"all-minilm-l6-v2": 384}


def model_for(user: User, slug: str) -> LanguageModel:
    """The model ``slug`` for ``user``; ServiceError (404) when it has none by that id."""
    try:
        return access_model(user, slug)
    except Http404:
        raise ServiceError(
            ErrorCode.MODEL_NOT_FOUND,
            f"The model {quoted(slug)} does not exist or you do not have access to it.",
            param="model",
        ) from None


def completion_check(
    *, user: User, body: ChatCompletionRequest | CompletionRequest
) -> tuple[ModelVersion, SamplingParams]:
    """The version that answers ``body`` for ``user``, and the parameters it runs with; a
    ServiceError for anything wrong. Writes nothing."""
    model = model_for(user, body.model)
    chat = isinstance(body, ChatCompletionRequest)
    expected = (
        (LanguageModel.Task.CHAT,)
        if chat
        else (LanguageModel.Task.CHAT, LanguageModel.Task.COMPLETION)
    )
    if model.task not in expected:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            f"The model {quoted(model.slug)} serves {model.task}; it cannot be used here.",
            param="model",
        )
    version = active_version(model)
    return version, sampling_params_for(version, body.sampling(), fallback=OPENAI_DEFAULTS)


def completion_start(
    *,
    user: User,
    api_key: ApiKey | None,
    body: ChatCompletionRequest | CompletionRequest,
    priority: str = Priority.INTERACTIVE,
) -> list[Generation]:
    """Validate and enqueue ``body.n`` generations for ``user`` (through ``api_key``: an
    inference key, or None for a batch whose key has gone)."""
    version, params = completion_check(user=user, body=body)
    messages = body.engine_messages() if isinstance(body, ChatCompletionRequest) else None
    return generation_start(
        user=user,
        version=version,
        params=params,
        messages=messages,
        prompt="" if isinstance(body, ChatCompletionRequest) else body.prompt,
        api_key=api_key,
        n=body.n,
        end_user=body.user or "",
        priority=priority,
    )


def completion_cancel(*, generations: list[Generation]) -> None:
    """The client went away: stop whatever is still running."""
    for generation in generations:
        generation_cancel(generation=generation)


def classifications_start(*, api_key: ApiKey, body: ClassificationRequest) -> EmbeddingBatch:
    """Validate and enqueue a classification request."""
    model = model_for(api_key.user, body.model)
    return classification_start(
        user=api_key.user, model=model, inputs=body.inputs(), api_key=api_key
    )


def embeddings_check(*, user: User, body: EmbeddingRequest) -> tuple[ModelVersion, list[str]]:
    """The version that answers ``body`` for ``user``, and its texts; a ServiceError for
    anything wrong. Writes nothing."""
    model = model_for(user, body.model)
    if model.task != LanguageModel.Task.EMBEDDINGS:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            f"The model {quoted(model.slug)} serves {model.task}, not embeddings.",
            param="model",
        )
    inputs = body.inputs()
    native = EMBEDDING_DIMENSIONS.get(model.slug)
    if body.dimensions is not None and body.dimensions != native:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            f"The model {quoted(model.slug)} gives {native}-dimensional embeddings; "
            "dimensions cannot be changed.",
            param="dimensions",
        )
    return active_version(model), inputs


def embeddings_start(
    *,
    user: User,
    api_key: ApiKey | None,
    body: EmbeddingRequest,
    priority: str = Priority.INTERACTIVE,
) -> EmbeddingBatch:
    """Validate and enqueue an embeddings request."""
    version, inputs = embeddings_check(user=user, body=body)
    return embedding_start(
        user=user, version=version, inputs=inputs, api_key=api_key, priority=priority
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
            f"The model {quoted(slug)} is not a fine-tuned model of this account.",
            code="model_not_found",
            param="model",
        )
    fine_tuned_model_delete(model=model)


def not_found(what: str, value: str, param: str | None = None) -> ApiError:
    return ApiError(404, f"No {what} {quoted(value)} exists for this account.", param=param)


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
    eval_set = None
    if body.eval_set is not None:
        try:
            eval_set = access_eval_set(user, body.eval_set)
        except Http404:
            raise not_found("eval set", body.eval_set, "eval_set") from None
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
            eval_set=eval_set,
        )
        return access_job(user, job.pk)


def answer_messages(generation: Generation, tools: set[str]) -> list[dict[str, Any]]:
    """A finished generation's answer as the chat message the next turn reads: its calls (with
    the ids the client was given) where it made calls to ``tools``, else its text."""
    calls = answer_calls(generation.pk, generation.output, tools)
    if calls is not None and generation.finish_reason not in ("length", "timeout"):
        return [{"role": "assistant", "content": None, "tool_calls": calls}]
    return [{"role": "assistant", "content": generation.output}]


def response_tool_names(stored: StoredResponse) -> set[str]:
    """The functions a stored response's request offered (its answer may have called them)."""
    return {tool["name"] for tool in stored.request.get("tools") or ()}


def response_create(*, api_key: ApiKey, body: ResponseRequest) -> StoredResponse:
    """``POST /v1/responses``: the conversation so far (the ``previous_response_id`` chain), this
    input and the instructions become one chat generation, queued like a chat completion's (and
    metered as one). The response is stored unless ``store`` is false; either way the object
    returned carries what the answer needs (unsaved when not stored). Precondition: the key
    allows inference."""
    history: list[dict[str, Any]] = []
    previous = None
    if body.previous_response_id is not None:
        try:
            previous = access_response(api_key.user, body.previous_response_id)
        except Http404:
            raise not_found("response", body.previous_response_id, "previous_response_id") from None
        if not previous.generation.is_finished:
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER,
                f"The response {quoted(body.previous_response_id)} is still in progress; continue the "
                "conversation once it has finished.",
                param="previous_response_id",
            )
        history = [
            *previous.context,
            *answer_messages(previous.generation, response_tool_names(previous)),
        ]
    known_calls = {call["id"] for message in history for call in message.get("tool_calls") or ()}
    context = [*history, *body.input_messages(known_calls)]
    chat = body.chat_request(context)
    with transaction.atomic():
        (generation,) = completion_start(user=api_key.user, api_key=api_key, body=chat)
        stored = StoredResponse(
            id=generation.pk,
            user=api_key.user,
            api_key=api_key,
            generation=generation,
            previous=previous,
            model=body.model,
            context=context,
            input_items=[item.model_dump(exclude_none=True) for item in body.items()],
            request=body.echoed(),
        )
        if body.store:
            stored.save()
    return stored


def response_delete(*, api_key: ApiKey, value: str) -> None:
    """``DELETE /v1/responses/{id}``: the stored response goes (one still running is stopped
    first); its generation stays on record for usage, as a deleted chat's do."""
    try:
        stored = access_response(api_key.user, value)
    except Http404:
        raise not_found("response", value) from None
    with transaction.atomic():
        generation_cancel(generation=stored.generation)
        stored.delete()


def response_cancel(*, api_key: ApiKey, value: str) -> StoredResponse:
    """``POST /v1/responses/{id}/cancel``: stop a background response, keeping its text so far.
    One that has finished is left as it is; only background responses can be cancelled."""
    try:
        stored = access_response(api_key.user, value)
    except Http404:
        raise not_found("response", value) from None
    if not stored.request.get("background"):
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            "Only a response created with background: true can be cancelled; a streamed or "
            "waited-for response stops when its client disconnects.",
        )
    generation_cancel(generation=stored.generation)
    return access_response(api_key.user, value)
