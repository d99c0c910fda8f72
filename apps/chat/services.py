"""Writes of the chat: conversations, their settings, and the turns that start generations."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from apps.accounts.limits import LimitExceeded, token_window
from apps.accounts.models import User
from apps.catalog.models import LanguageModel
from apps.catalog.selectors import DEFAULT_CHAT_MODEL, active_version, chat_models_for
from apps.core.errors import ErrorCode, ServiceError
from apps.inference.models import Generation
from apps.inference.protocol import SamplingParams
from apps.inference.services import generation_cancel, generation_create

from .models import Conversation, Message
from .selectors import conversation_in_flight

TITLE_CHARS = 60


def conversation_create(*, owner: User) -> Conversation:
    """A new empty conversation on the default chat model (or the first one ``owner`` may use)."""
    models = chat_models_for(owner)
    if not models:
        raise ServiceError(ErrorCode.MODEL_NOT_FOUND, "No chat model is available to you yet.")
    model = next((m for m in models if m.slug == DEFAULT_CHAT_MODEL), models[0])
    defaults = active_version(model).default_params
    knobs = {k: defaults[k] for k in ("temperature", "top_p", "max_tokens") if k in defaults}
    return Conversation.objects.create(owner=owner, model=model, **knobs)


def conversation_rename(*, conversation: Conversation, title: str) -> Conversation:
    conversation.title = title.strip()[:200]
    conversation.save(update_fields=["title", "updated_at"])
    return conversation


@transaction.atomic
def conversation_delete(*, conversation: Conversation) -> None:
    """Delete the conversation and its messages; an answer in flight is stopped first."""
    in_flight = conversation_in_flight(conversation)
    if in_flight is not None:
        generation_cancel(generation=in_flight)
    conversation.delete()


def conversation_update_settings(
    *,
    conversation: Conversation,
    model: LanguageModel,
    system_prompt: str,
    temperature: float,
    top_p: float,
    max_tokens: int,
) -> Conversation:
    """Precondition: ``model`` came from ``access_model`` and the numbers passed SettingsForm."""
    conversation.model = model
    conversation.system_prompt = system_prompt
    conversation.temperature = temperature
    conversation.top_p = top_p
    conversation.max_tokens = max_tokens
    conversation.save()
    return conversation


def _check_text(text: str) -> str:
    text = text.strip()
    if not text:
        raise ServiceError(ErrorCode.INVALID_PARAMETER, "Type a message first.", param="text")
    if "\x00" in text:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            "The message contains a NUL character, which text cannot hold; remove it.",
            param="text",
        )
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    if len(text) > limit:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            f"The message has {len(text)} characters; the limit is {limit}. Shorten it.",
            param="text",
        )
    return text


def _lock(conversation: Conversation) -> None:
    """Serialise turns of one conversation (two tabs sending at once), inside the caller's
    transaction."""
    list(Conversation.objects.select_for_update().filter(pk=conversation.pk).values_list("pk"))


def _ensure_idle(conversation: Conversation) -> None:
    if conversation_in_flight(conversation) is not None:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            "An answer is still being written: wait for it or stop it first.",
        )


def _prompt_messages(conversation: Conversation) -> list[dict[str, str]]:
    """The conversation as chat-template messages; failed answers are left out."""
    messages = []
    if conversation.system_prompt.strip():
        messages.append({"role": "system", "content": conversation.system_prompt.strip()})
    for message in conversation.messages.select_related("generation"):
        if message.role == Message.Role.ASSISTANT and (
            message.generation is None or message.generation.status == Generation.Status.FAILED
        ):
            continue
        messages.append({"role": message.role, "content": message.text})
    return messages


def _start_answer(conversation: Conversation, owner: User) -> Message:
    try:
        token_window(owner)
    except LimitExceeded as exceeded:
        raise ServiceError(ErrorCode.QUOTA_EXCEEDED, exceeded.message) from None
    model = conversation.model
    if model not in chat_models_for(owner):
        raise ServiceError(
            ErrorCode.MODEL_NOT_FOUND,
            f"The model {model.slug!r} is no longer available; pick another.",
        )
    version = active_version(model)
    generation = generation_create(
        user=owner,
        model_version=version,
        # The conversation's own settings win; the version's other defaults (stop, top_k, ...)
        # apply beneath them.
        params=SamplingParams.parse(
            {
                **version.default_params,
                "temperature": conversation.temperature,
                "top_p": conversation.top_p,
                "max_tokens": conversation.max_tokens,
            }
        ),
        messages=_prompt_messages(conversation),
    )
    return Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, generation=generation
    )


@transaction.atomic
def chat_message_send(*, conversation: Conversation, text: str) -> tuple[Message, Message]:
    """Add the user's turn and start the answer. Raises ServiceError, writing nothing, on bad input."""
    text = _check_text(text)
    _lock(conversation)
    _ensure_idle(conversation)
    user_message = Message.objects.create(
        conversation=conversation, role=Message.Role.USER, content=text
    )
    if not conversation.title:
        conversation.title = text[:TITLE_CHARS]
    # Bumps updated_at, so the conversation moves to the top of the list.
    conversation.save(update_fields=["title", "updated_at"])
    return user_message, _start_answer(conversation, conversation.owner)


@transaction.atomic
def chat_answer_regenerate(*, conversation: Conversation) -> tuple[Message | None, Message]:
    """Replace the last answer (finished, failed or stopped) with a new one.

    Returns the replaced message (already deleted, its ``pk`` kept for the caller) and the new one.
    The old generation stays on record for usage; only the message goes.
    """
    _lock(conversation)
    _ensure_idle(conversation)
    last = conversation.messages.order_by("-created_at", "-id").first()
    if last is None:
        raise ServiceError(ErrorCode.INVALID_PARAMETER, "There is nothing to regenerate yet.")
    replaced = None
    if last.role == Message.Role.ASSISTANT:
        replaced_pk = last.pk
        last.delete()
        last.pk = replaced_pk
        replaced = last
    conversation.save(update_fields=["updated_at"])
    return replaced, _start_answer(conversation, conversation.owner)


def chat_answer_stop(*, conversation: Conversation) -> Generation | None:
    """Stop the answer in flight, keeping its text so far. None when nothing was running."""
    in_flight = conversation_in_flight(conversation)
    if in_flight is not None and generation_cancel(generation=in_flight):
        return in_flight
    return None


@transaction.atomic
def chat_compare_start(
    *, owner: User, models: list[LanguageModel], text: str, params: SamplingParams
) -> list[Generation]:
    """One prompt to several models at once (the compare view): one generation each, with the same
    parameters. Preconditions: the models came from ``access_model``; ``params`` are validated."""
    text = _check_text(text)
    try:
        token_window(owner)
    except LimitExceeded as exceeded:
        raise ServiceError(ErrorCode.QUOTA_EXCEEDED, exceeded.message) from None
    return [
        generation_create(
            user=owner,
            model_version=active_version(model),
            params=params,
            messages=[{"role": "user", "content": text}],
        )
        for model in models
    ]
