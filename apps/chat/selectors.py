from __future__ import annotations

import uuid
from datetime import timedelta

from django.db.models import Q
from django.http import Http404
from django.utils import timezone

from apps.accounts.models import User
from apps.catalog.models import LanguageModel
from apps.core.documents import with_documents
from apps.inference.models import Generation

from .models import Conversation, Document, Message, Preset


def access_conversation(user: User, conversation_id: object) -> Conversation:
    """The conversation ``conversation_id`` if ``user`` owns it; 404 for missing and not-yours."""
    try:
        key = uuid.UUID(str(conversation_id))
    except ValueError:
        raise Http404("No such conversation") from None
    conversation = (
        Conversation.objects.select_related("model")
        .filter(pk=key, owner_id=user.pk, deleted_at__isnull=True)
        .first()
        if user.is_authenticated
        else None
    )
    if conversation is None:
        raise Http404("No such conversation")
    return conversation


def conversations_for(user: User, query: str = "") -> list[Conversation]:
    """``user``'s conversations, pinned first, then the most recent. With ``query``, those whose
    title or any message (the user's text or an answer) contains it, ignoring case."""
    found = Conversation.objects.filter(owner=user, deleted_at__isnull=True)
    query = query.strip()
    if query:
        matching = Message.objects.filter(
            Q(content__icontains=query) | Q(generation__output__icontains=query)
        ).values("conversation_id")
        found = found.filter(Q(title__icontains=query) | Q(pk__in=matching))
    return list(found)


def presets_for(user: User) -> list[Preset]:
    """The shipped presets, then ``user``'s own."""
    return list(Preset.objects.filter(Q(owner__isnull=True) | Q(owner=user)))


def access_preset(user: User, preset_id: object) -> Preset:
    """A preset ``user`` may apply (shipped, or their own); 404 otherwise."""
    try:
        key = int(str(preset_id))
    except ValueError:
        raise Http404("No such preset") from None
    preset = Preset.objects.filter(Q(owner__isnull=True) | Q(owner=user), pk=key).first()
    if preset is None:
        raise Http404("No such preset")
    return preset


def deleted_conversation(user: User, conversation_id: object) -> Conversation:
    """``user``'s conversation deleted within the undo window; 404 otherwise."""
    cutoff = timezone.now() - timedelta(seconds=Conversation.UNDO_SECONDS)
    try:
        key = uuid.UUID(str(conversation_id))
    except ValueError:
        raise Http404("No such conversation") from None
    found = Conversation.objects.filter(pk=key, owner_id=user.pk, deleted_at__gte=cutoff).first()
    if found is None:
        raise Http404("Nothing to undo: the conversation is gone")
    return found


def prompt_messages(
    conversation: Conversation, *, before: Message | None = None
) -> list[dict[str, str]]:
    """The conversation as chat-template messages (up to ``before``, not included): failed and
    empty answers are left out, and a user message's documents come before its text, in
    ``apps.core.documents``' form."""
    messages = []
    if conversation.system_prompt.strip():
        messages.append({"role": "system", "content": conversation.system_prompt.strip()})
    turns = conversation.messages.select_related("generation").prefetch_related("documents")
    if before is not None:
        turns = turns.filter(
            Q(created_at__lt=before.created_at) | Q(created_at=before.created_at, pk__lt=before.pk)
        )
    for message in turns:
        if message.role == Message.Role.ASSISTANT and (
            (message.generation is not None and message.generation.is_failed) or not message.text
        ):
            continue
        documents = [(d.name, d.text) for d in message.documents.all()]
        messages.append({"role": message.role, "content": with_documents(message.text, documents)})
    return messages


def access_answer(user: User, message_id: object) -> Message:
    """The finished, successful answer ``message_id`` in one of ``user``'s conversations (not
    deleted); 404 for missing and not-yours."""
    try:
        key = int(str(message_id))
    except ValueError:
        raise Http404("No such answer") from None
    found = (
        Message.objects.select_related("conversation", "generation")
        .filter(
            pk=key,
            role=Message.Role.ASSISTANT,
            conversation__owner_id=user.pk,
            conversation__deleted_at__isnull=True,
            generation__status=Generation.Status.SUCCEEDED,
        )
        .first()
        if user.is_authenticated
        else None
    )
    if found is None:
        raise Http404("No such answer")
    return found


def conversation_messages(conversation: Conversation) -> list[Message]:
    return list(
        conversation.messages.select_related("generation__model_version__model").prefetch_related(
            "documents"
        )
    )


def access_document(user: User, document_id: object) -> Document:
    """The document ``document_id`` if ``user`` attached it (and its conversation is not
    deleted); 404 for missing and not-yours."""
    try:
        key = uuid.UUID(str(document_id))
    except ValueError:
        raise Http404("No such document") from None
    document = (
        Document.objects.filter(pk=key, owner_id=user.pk)
        .exclude(message__conversation__deleted_at__isnull=False)
        .first()
        if user.is_authenticated
        else None
    )
    if document is None:
        raise Http404("No such document")
    return document


def unsent_documents(user: User, ids: list[str]) -> list[Document]:
    """Those of ``ids`` that are ``user``'s documents not yet sent, in the order attached (the
    arrival composer shows them again when its message is refused)."""
    keys = []
    for value in ids:
        try:
            keys.append(uuid.UUID(value))
        except ValueError:
            continue
    return list(Document.objects.filter(owner_id=user.pk, message__isnull=True, pk__in=keys))


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


def completion_models_for(user: User) -> list[LanguageModel]:
    """The models ``user`` may give a raw prompt to: chat and completion models."""
    return list(
        LanguageModel.objects.usable_by(user).filter(
            task__in=[LanguageModel.Task.CHAT, LanguageModel.Task.COMPLETION]
        )
    )
