from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from apps.chat.models import Conversation
from playground.asgi import application
from tests.factories import ConversationFactory


@pytest.fixture
def conversation(owner, chat_model) -> Conversation:
    return ConversationFactory(owner=owner, model=chat_model, title="Mine")


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


async def communicator(user, conversation_id=None, *, path=None) -> WebsocketCommunicator:
    """A WebSocket client through the whole ASGI stack (origin check, session auth, routing), on
    a conversation's socket or on ``path``."""
    headers = [(b"origin", b"http://testserver")]
    if user is not None:
        headers.append((b"cookie", await database_sync_to_async(session_cookie)(user)))
    return WebsocketCommunicator(
        application, path or f"/ws/chat/{conversation_id}/", headers=headers
    )
