"""Writes of the chat: conversations, their settings, and the turns that start generations."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from apps.accounts.limits import LimitExceeded
from apps.accounts.models import User
from apps.catalog.models import LanguageModel
from apps.catalog.selectors import (
    DEFAULT_CHAT_MODEL,
    active_version,
    chat_models_for,
    version_spec,
)
from apps.core.documents import document_text, with_documents
from apps.core.errors import ErrorCode, ServiceError, quoted
from apps.inference.models import Generation
from apps.inference.protocol import SamplingParams
from apps.inference.services import generation_cancel, generation_start, sampling_params_for
from apps.inference.tokens import token_count
from apps.inference.usage import token_window

from .models import Conversation, Document, Message, Preset
from .selectors import conversation_in_flight, prompt_messages

TITLE_CHARS = 60


def conversation_create(*, owner: User, model: LanguageModel | None = None) -> Conversation:
    """A new empty conversation on ``model`` (precondition: from ``access_model``), or else on
    the default chat model (or the first one ``owner`` may use)."""
    if model is None:
        models = chat_models_for(owner)
        if not models:
            raise ServiceError(
                ErrorCode.MODEL_NOT_FOUND, _("No chat model is available to you yet.")
            )
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
    """Hide the conversation at once (an answer in flight is stopped first); ``conversation_restore``
    brings it back within UNDO_SECONDS. The owner's conversations deleted longer ago than that
    are purged, with their messages, here."""
    in_flight = conversation_in_flight(conversation)
    if in_flight is not None:
        generation_cancel(generation=in_flight)
    now = timezone.now()
    Conversation.objects.filter(pk=conversation.pk).update(deleted_at=now)
    purged = Conversation.objects.filter(
        owner_id=conversation.owner_id,
        deleted_at__lt=now - timedelta(seconds=Conversation.UNDO_SECONDS),
    )
    _delete_files(Document.objects.filter(message__conversation__in=purged))
    purged.delete()


def conversation_restore(*, conversation: Conversation) -> Conversation:
    """Undo a delete. Precondition: ``conversation`` came from ``deleted_conversation``."""
    conversation.deleted_at = None
    conversation.save(update_fields=["deleted_at"])
    return conversation


def conversation_pin(*, conversation: Conversation, pinned: bool) -> Conversation:
    """Pinned conversations head the list. The order within stays by last activity."""
    Conversation.objects.filter(pk=conversation.pk).update(pinned=pinned)
    conversation.pinned = pinned
    return conversation


def conversation_update_settings(
    *,
    conversation: Conversation,
    model: LanguageModel,
    system_prompt: str,
    temperature: float,
    top_p: float,
    max_tokens: int,
    json_schema: dict[str, Any] | None = None,
) -> Conversation:
    """Precondition: ``model`` came from ``access_model`` and the numbers and the schema passed
    SettingsForm."""
    conversation.model = model
    conversation.system_prompt = system_prompt
    conversation.temperature = temperature
    conversation.top_p = top_p
    conversation.max_tokens = max_tokens
    conversation.json_schema = json_schema
    conversation.save()
    return conversation


# What _check_text calls the text it checks, in the page's language.
_WHAT = {"message": gettext_lazy("message"), "prompt": gettext_lazy("prompt")}


def _check_text(
    text: str, *, what: str = "message", param: str = "text", strip: bool = True
) -> str:
    """``text`` (stripped, unless ``strip`` is off: a raw prompt is kept as typed) if it is
    not blank, holds no NUL and is within CHAT_MAX_MESSAGE_CHARS; ServiceError otherwise."""
    if strip:
        text = text.strip()
    if not text.strip():
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            _("Type a %(what)s first.") % {"what": _WHAT[what]},
            param=param,
        )
    if "\x00" in text:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            _("The %(what)s contains a NUL character, which text cannot hold; remove it.")
            % {"what": _WHAT[what]},
            param=param,
        )
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    if len(text) > limit:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            _("The %(what)s has %(count)s characters; the limit is %(limit)s. Shorten it.")
            % {"what": _WHAT[what], "count": len(text), "limit": limit},
            param=param,
        )
    return text


def _check_quota(owner: User) -> None:
    """ServiceError (quota_exceeded) when ``owner`` has used up their daily tokens."""
    try:
        token_window(owner)
    except LimitExceeded as exceeded:
        raise ServiceError(ErrorCode.QUOTA_EXCEEDED, exceeded.message) from None


def _lock(conversation: Conversation) -> None:
    """Serialise turns of one conversation (two tabs sending at once), inside the caller's
    transaction."""
    list(Conversation.objects.select_for_update().filter(pk=conversation.pk).values_list("pk"))


def _ensure_idle(conversation: Conversation) -> None:
    if conversation_in_flight(conversation) is not None:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            _("An answer is still being written: wait for it or stop it first."),
        )


def _delete_files(documents: QuerySet[Document]) -> None:
    """Remove the files of ``documents`` (whose rows the caller deletes) once the transaction
    commits: a rollback keeps both."""
    names = list(documents.values_list("file", flat=True))
    if names:
        storage = Document._meta.get_field("file").storage  # type: ignore[union-attr]

        def delete() -> None:
            for name in names:
                storage.delete(name)

        transaction.on_commit(delete)


def _check_fits(name: str, tokens: int, max_tokens: int, model: LanguageModel) -> None:
    """ServiceError (context_length_exceeded) when ``tokens`` of documents would not leave
    ``max_tokens`` of ``model``'s context for the answer."""
    context = active_version(model).context_length
    if tokens + max_tokens <= context:
        return
    raise ServiceError(
        ErrorCode.CONTEXT_LENGTH_EXCEEDED,
        _(
            "%(name)s is %(tokens)s tokens; %(model)s reads %(context)s at most, %(kept)s of them "
            "kept for the answer. Attach a shorter document, or a part of it."
        )
        % {
            "name": name,
            "tokens": f"{tokens:,}",
            "model": quoted(model.display_name),
            "context": f"{context:,}",
            "kept": f"{max_tokens:,}",
        },
        param="documents",
    )


@transaction.atomic
def document_attach(
    *, owner: User, model: LanguageModel, filename: str, data: bytes, max_tokens: int
) -> Document:
    """A document for ``owner``'s next message to ``model`` (precondition: from
    ``access_model``), whose answer may take ``max_tokens``: its file kept under the media root,
    its text read and its tokens counted. Raises ServiceError, keeping nothing, for a file the
    chat cannot read (``apps.core.documents.document_text``) and for one whose text would not
    leave ``max_tokens`` of the model's context for the answer. Documents the owner attached
    and never sent are removed after ``Document.UNSENT_SECONDS``."""
    read = document_text(filename, data)
    tokens = token_count(
        version_spec(active_version(model)), with_documents("", [(read.name, read.text)])
    )
    if tokens is not None:
        _check_fits(quoted(read.name), tokens, max_tokens, model)
    stale = Document.objects.filter(
        owner=owner,
        message__isnull=True,
        created_at__lt=timezone.now() - timedelta(seconds=Document.UNSENT_SECONDS),
    )
    _delete_files(stale)
    stale.delete()
    document = Document(
        owner=owner, name=read.name, kind=read.kind, bytes=len(data), text=read.text, tokens=tokens
    )
    document.file.save(read.name, ContentFile(data), save=False)
    try:
        document.save()
    except BaseException:
        document.file.delete(save=False)
        raise
    return document


def _take_documents(conversation: Conversation, ids: Sequence[object]) -> list[Document]:
    """The owner's unsent documents ``ids``, in the order they were attached; ServiceError when
    one is not theirs or not unsent any more, when there are too many, or when together they
    would not leave the conversation's ``max_tokens`` for the answer."""
    if not ids:
        return []
    limit = settings.CHAT_MAX_DOCUMENTS
    if len(ids) > limit:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            _("The message has %(count)s documents; the limit is %(limit)s.")
            % {"count": len(ids), "limit": limit},
            param="documents",
        )
    keys = {_uuid_or_none(i) for i in ids}
    valid = {key for key in keys if key is not None}
    found = list(
        Document.objects.select_for_update().filter(
            owner_id=conversation.owner_id, message__isnull=True, pk__in=valid
        )
    )
    if len(found) != len(keys):
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            _(
                "An attached document is no longer there (sent already, or removed); "
                "attach it again."
            ),
            param="documents",
        )
    counted = [d.tokens for d in found if d.tokens is not None]
    if counted:
        what = (
            quoted(found[0].name)
            if len(found) == 1
            else _("Together the %(count)s documents") % {"count": len(found)}
        )
        _check_fits(what, sum(counted), conversation.max_tokens, conversation.model)
    return sorted(found, key=lambda d: (d.created_at, str(d.pk)))


def _uuid_or_none(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _start_answer(
    conversation: Conversation, owner: User, *, again: Generation | None = None
) -> Message:
    """A new answer to the conversation as it stands, with its settings over the version's
    defaults and a fresh seed (every answer records its seed, so it can be run again exactly);
    or, with ``again``, that answer's model version, parameters and seed (the same text)."""
    _check_quota(owner)
    model = again.model_version.model if again else conversation.model
    if model not in chat_models_for(owner):
        raise ServiceError(
            ErrorCode.MODEL_NOT_FOUND,
            _("The model %(model)s is no longer available; pick another.")
            % {"model": quoted(model.slug)},
        )
    if again is not None:
        version, params = again.model_version, SamplingParams.model_validate(again.params)
    else:
        version = active_version(model)
        params = sampling_params_for(version, conversation.sampling_settings(), new_seed=True)
    [generation] = generation_start(
        user=owner, version=version, params=params, messages=prompt_messages(conversation)
    )
    return Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, generation=generation
    )


@transaction.atomic
def chat_message_send(
    *, conversation: Conversation, text: str, documents: Sequence[object] = ()
) -> tuple[Message, Message]:
    """Add the user's turn, with the unsent ``documents`` (ids from ``document_attach``) the
    owner attached to it, and start the answer. A message with documents may have no text of
    its own. Raises ServiceError, writing nothing, on bad input."""
    text = _check_text(text) if text.strip() or not documents else ""
    _lock(conversation)
    _ensure_idle(conversation)
    attached = _take_documents(conversation, documents)
    user_message = Message.objects.create(
        conversation=conversation, role=Message.Role.USER, content=text
    )
    Document.objects.filter(pk__in=[d.pk for d in attached]).update(message=user_message)
    if not conversation.title:
        conversation.title = (text or attached[0].name)[:TITLE_CHARS]
    # Bumps updated_at, so the conversation moves to the top of the list.
    conversation.save(update_fields=["title", "updated_at"])
    return user_message, _start_answer(conversation, conversation.owner)


@transaction.atomic
def conversation_start(
    *,
    owner: User,
    text: str,
    model: LanguageModel | None = None,
    documents: Sequence[object] = (),
) -> tuple[Conversation, Message]:
    """A conversation made by its first message (the chat page's arrival composer): created on
    ``model`` (as ``conversation_create``), titled from ``text``, its answer started; the message
    carries the ``documents`` as ``chat_message_send``'s do. Returns the conversation and the
    answer's message. A refused message (blank, too long, the quota used up) raises ServiceError
    and leaves no conversation behind."""
    conversation = conversation_create(owner=owner, model=model)
    _question, answer = chat_message_send(conversation=conversation, text=text, documents=documents)
    return conversation, answer


@transaction.atomic
def chat_answer_regenerate(
    *, conversation: Conversation, same_settings: bool = False
) -> tuple[Message | None, Message]:
    """Replace the last answer (finished, failed or stopped) with a new one; with
    ``same_settings``, with the last answer's model version, parameters and seed ("run again
    with these settings": the same text again).

    Returns the replaced message (already deleted, its ``pk`` kept for the caller) and the new one.
    The old generation stays on record for usage; only the message goes.
    """
    _lock(conversation)
    _ensure_idle(conversation)
    last = conversation.messages.select_related("generation__model_version__model").last()
    if last is None:
        raise ServiceError(ErrorCode.INVALID_PARAMETER, _("There is nothing to regenerate yet."))
    again = last.generation if same_settings and last.role == Message.Role.ASSISTANT else None
    if same_settings and again is None:
        raise ServiceError(ErrorCode.INVALID_PARAMETER, _("There is no answer to run again yet."))
    replaced = None
    if last.role == Message.Role.ASSISTANT:
        replaced_pk = last.pk
        last.delete()
        last.pk = replaced_pk
        replaced = last
    conversation.save(update_fields=["updated_at"])
    return replaced, _start_answer(conversation, conversation.owner, again=again)


@transaction.atomic
def chat_message_edit(
    *, conversation: Conversation, message_id: object, text: str
) -> tuple[Message, list[int], Message]:
    """Change a past user message and answer it again: the turns after it are replaced.

    Returns the edited message, the ``pk``s of the messages removed after it, and the new answer.
    Raises ServiceError, changing nothing, for bad text, an answer in flight, or a message that
    is not one of this conversation's user messages.
    """
    text = _check_text(text)
    _lock(conversation)
    _ensure_idle(conversation)
    pk = _int_or_none(message_id)
    message = conversation.messages.filter(pk=pk, role=Message.Role.USER).first() if pk else None
    if message is None:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER, _("Only your own messages in this chat can be edited.")
        )
    later = conversation.messages.filter(
        Q(created_at__gt=message.created_at) | Q(created_at=message.created_at, pk__gt=message.pk)
    )
    removed = list(later.values_list("pk", flat=True))
    _delete_files(Document.objects.filter(message__in=later))
    later.delete()  # their generations stay on record for usage
    message.content = text
    message.save(update_fields=["content"])
    conversation.save(update_fields=["updated_at"])
    return message, removed, _start_answer(conversation, conversation.owner)


def _int_or_none(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def chat_answer_stop(*, conversation: Conversation) -> Generation | None:
    """Stop the answer in flight, keeping its text so far. None when nothing was running."""
    in_flight = conversation_in_flight(conversation)
    if in_flight is not None and generation_cancel(generation=in_flight):
        return in_flight
    return None


@transaction.atomic
def chat_compare_start(
    *, owner: User, models: list[LanguageModel], text: str, settings: dict[str, Any]
) -> list[Generation]:
    """One prompt to several models at once (the compare view): one generation each, with the
    same ``settings`` over each version's defaults. Precondition: the models came from
    ``access_model``. ServiceError, nothing written, on bad text or settings."""
    text = _check_text(text)
    _check_quota(owner)
    generations = []
    for model in models:
        version = active_version(model)
        generations += generation_start(
            user=owner,
            version=version,
            params=sampling_params_for(version, settings, new_seed=True),
            messages=[{"role": "user", "content": text}],
        )
    return generations


def preset_save(*, owner: User, conversation: Conversation, name: str) -> Preset:
    """Save the conversation's system prompt and parameters as ``owner``'s preset ``name``
    (replacing their own preset of that name)."""
    name = name.strip()
    if not name:
        raise ServiceError(ErrorCode.INVALID_PARAMETER, _("Give the preset a name."), param="name")
    if len(name) > 80:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            _("The name has %(count)s characters; the limit is 80.") % {"count": len(name)},
            param="name",
        )
    if Preset.objects.filter(owner__isnull=True, name__iexact=name).exists():
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            _("%(name)s is a built-in preset's name; choose another.") % {"name": quoted(name)},
            param="name",
        )
    preset, _created = Preset.objects.update_or_create(
        owner=owner,
        name=name,
        defaults={
            "system_prompt": conversation.system_prompt,
            "temperature": conversation.temperature,
            "top_p": conversation.top_p,
            "max_tokens": conversation.max_tokens,
        },
    )
    return preset


def preset_apply(*, conversation: Conversation, preset: Preset) -> Conversation:
    """Precondition: ``preset`` came from ``access_preset`` for the conversation's owner."""
    conversation.system_prompt = preset.system_prompt
    conversation.temperature = preset.temperature
    conversation.top_p = preset.top_p
    conversation.max_tokens = preset.max_tokens
    conversation.save()
    return conversation


@transaction.atomic
def completion_mode_start(
    *, owner: User, model: LanguageModel, prompt: str, settings: dict[str, Any]
) -> Generation:
    """Completion mode: continue ``prompt`` as it stands, with ``settings`` over the version's
    defaults. A seed is chosen when none is given, so the answer can be run again exactly.
    Precondition: ``model`` is one of ``completion_models_for(owner)``."""
    prompt = _check_text(prompt, what="prompt", param="prompt", strip=False)
    _check_quota(owner)
    version = active_version(model)
    params = sampling_params_for(version, settings, new_seed=True)
    [generation] = generation_start(user=owner, version=version, params=params, prompt=prompt)
    return generation
