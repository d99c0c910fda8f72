"""A conversation as a file: Markdown to read, JSON to keep and import again.

The JSON format (``"format": "playground.conversation"``, ``"version": 1``)::

    {"format", "version", "title", "model", "system_prompt", "temperature", "top_p",
     "max_tokens", "exported_at", "messages": [{"role": "user" | "assistant", "content",
     "model"?, "params"?}]}

Assistant turns carry the model and parameters that wrote them (the seed included), when known.
Failed answers are left out; a stopped answer keeps its text.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import Http404
from django.utils import timezone

from apps.accounts.models import User
from apps.catalog.models import LanguageModel
from apps.catalog.selectors import access_model
from apps.core.errors import ErrorCode, ServiceError, quoted
from apps.inference.protocol import SamplingParams

from .models import Conversation, Message
from .selectors import conversation_messages

FORMAT, VERSION = "playground.conversation", 1
MAX_IMPORT_BYTES = 5 * 1024 * 1024
MAX_IMPORT_MESSAGES = 2000


def conversation_as_json(conversation: Conversation) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for message in conversation_messages(conversation):
        gen = message.generation
        if gen is not None and gen.is_failed or not message.text:
            continue
        item: dict[str, Any] = {"role": message.role, "content": message.text}
        if gen is not None:
            item["model"] = f"{gen.model_version.model.slug}@{gen.model_version.label}"
            item["params"] = gen.params
        messages.append(item)
    return {
        "format": FORMAT,
        "version": VERSION,
        "title": conversation.title,
        "model": conversation.model.slug,
        "system_prompt": conversation.system_prompt,
        "temperature": conversation.temperature,
        "top_p": conversation.top_p,
        "max_tokens": conversation.max_tokens,
        "exported_at": timezone.now().isoformat(),
        "messages": messages,
    }


def conversation_as_markdown(conversation: Conversation) -> str:
    data = conversation_as_json(conversation)
    lines = [f"# {conversation.display_title}", ""]
    lines.append(
        f"*Model {data['model']} · temperature {data['temperature']} · top p {data['top_p']}"
        f" · max tokens {data['max_tokens']}*"
    )
    if data["system_prompt"]:
        lines += ["", "**System:** " + data["system_prompt"]]
    for message in data["messages"]:
        who = "You" if message["role"] == "user" else f"Assistant ({message.get('model', '')})"
        lines += ["", f"## {who}", "", message["content"]]
    return "\n".join(lines).rstrip() + "\n"


def _refuse(message: str, param: str | None = None) -> ServiceError:
    return ServiceError(ErrorCode.INVALID_PARAMETER, message, param=param)


def _text(value: Any, where: str, *, limit: int) -> str:
    if not isinstance(value, str):
        raise _refuse(f"{where} must be text.", where)
    if "\x00" in value:
        raise _refuse(f"{where} contains a NUL character, which text cannot hold.", where)
    if len(value) > limit:
        raise _refuse(f"{where} has {len(value)} characters; the limit is {limit}.", where)
    return value


def conversation_import(*, owner: User, raw: bytes) -> Conversation:
    """A new conversation of ``owner`` from a JSON export. Everything is checked before anything
    is written; a refusal names what to fix (ServiceError with the field's path)."""
    if len(raw) > MAX_IMPORT_BYTES:
        raise _refuse(f"The file has {len(raw)} bytes; the limit is {MAX_IMPORT_BYTES}.", "file")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _refuse(f"The file is not JSON: {exc}.", "file") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _refuse(f'Not a conversation export: expected "format": "{FORMAT}".', "format")
    if data.get("version") != VERSION:
        raise _refuse(
            f"Unknown export version {quoted(data.get('version'))}; expected 1.", "version"
        )
    title = _text(data.get("title", ""), "title", limit=200)
    system_prompt = _text(data.get("system_prompt", ""), "system_prompt", limit=8000)
    try:
        params = SamplingParams.parse(
            {k: data[k] for k in ("temperature", "top_p", "max_tokens") if k in data}
        )
    except ServiceError as exc:
        raise _refuse(exc.message, exc.param) from None
    try:
        model = access_model(owner, str(data.get("model", "")), task=LanguageModel.Task.CHAT)
    except Http404:
        raise _refuse(
            f'The model {quoted(data.get("model"))} is not available to you; change the "model" '
            "field to one that is (the chat page lists them).",
            "model",
        ) from None
    messages = data.get("messages")
    if not isinstance(messages, list):
        raise _refuse("messages must be a list.", "messages")
    if len(messages) > MAX_IMPORT_MESSAGES:
        raise _refuse(
            f"The export has {len(messages)} messages; the limit is {MAX_IMPORT_MESSAGES}.",
            "messages",
        )
    turns = []
    for index, item in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(item, dict) or item.get("role") not in ("user", "assistant"):
            raise _refuse(f'{where} needs a "role" of "user" or "assistant".', f"{where}.role")
        content = _text(
            item.get("content"), f"{where}.content", limit=settings.CHAT_MAX_MESSAGE_CHARS * 4
        )
        turns.append(Message(role=item["role"], content=content))
    with transaction.atomic():
        conversation = Conversation.objects.create(
            owner=owner,
            model=model,
            title=title,
            system_prompt=system_prompt,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
        )
        for turn in turns:
            turn.conversation = conversation
            turn.save()  # one by one: created_at keeps their order
    return conversation
