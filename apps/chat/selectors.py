from __future__ import annotations

import uuid

from django.http import Http404

from apps.accounts.models import User
from apps.inference.models import Generation

from .models import Conversation, Message


def access_conversation(user: User, conversation_id: object) -> Conversation:
    """The conversation ``conversation_id`` if ``user`` owns it; 404 for missing and not-yours."""
    try:
        key = uuid.UUID(str(conversation_id))
    except ValueError:
        raise Http404("No such conversation") from None
    conversation = (
        Conversation.objects.select_related("model").filter(pk=key, owner_id=user.pk).first()
        if user.is_authenticated
        else None
    )
    if conversation is None:
        raise Http404("No such conversation")
    return conversation


def conversations_for(user: User) -> list[Conversation]:
    return list(Conversation.objects.filter(owner=user))


def conversation_messages(conversation: Conversation) -> list[Message]:
    return list(conversation.messages.select_related("generation__model_version__model"))


def conversation_in_flight(conversation: Conversation) -> Generation | None:
    """The answer being generated in ``conversation``, if any."""
    return (
        Generation.objects.in_flight()
        .filter(message__conversation=conversation)
        .order_by("-created_at")
        .first()
    )


def message_for_generation(generation_id: str | uuid.UUID) -> Message | None:
    return (
        Message.objects.select_related("generation__model_version__model")
        .filter(generation_id=generation_id)
        .first()
    )


def last_answer(conversation: Conversation) -> Message | None:
    return (
        conversation.messages.filter(role=Message.Role.ASSISTANT)
        .select_related("generation__model_version__model")
        .order_by("-created_at", "-id")
        .first()
    )
