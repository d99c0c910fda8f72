"""Browser safety: security headers and the Content-Security-Policy on every page, a clean
`check --deploy` with production settings, WebSockets refused from a foreign or missing Origin,
and CSRF on htmx posts. (That model output renders inert is tests/chat/test_rendering.py and, in
Chromium, tests/browser/test_output_safety.py; that the policy breaks nothing is asserted by
every browser test.)"""

from __future__ import annotations

import subprocess

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from apps.core.middleware import CONTENT_SECURITY_POLICY
from playground.asgi import application
from tests.chat.conftest import session_cookie
from tests.helpers import ROOT, child_env

pytestmark = pytest.mark.django_db


def test_pages_and_api_answers_carry_the_security_headers(client, owner):
    client.force_login(owner)
    for path in ("/accounts/login/", "/chat/", "/v1/models", "/healthz"):
        response = client.get(path, follow=True)
        headers = response.headers
        assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, path
        assert "script-src 'self'" in CONTENT_SECURITY_POLICY
        assert "'unsafe-eval'" not in CONTENT_SECURITY_POLICY
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["X-Frame-Options"] == "DENY", path
        assert headers["Referrer-Policy"] == "same-origin", path
        assert headers["Cross-Origin-Opener-Policy"] == "same-origin", path


def test_check_deploy_is_clean_with_production_settings():
    result = subprocess.run(
        [
            str(ROOT / ".venv/bin/python"),
            "manage.py",
            "check",
            "--deploy",
            "--fail-level",
            "WARNING",
        ],
        cwd=ROOT,
        env=child_env(HTTPS="true", DEBUG="false"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("origin", [b"http://evil.example", None])
async def test_websockets_from_a_foreign_or_missing_origin_are_refused(owner, chat_model, origin):
    from apps.chat.models import Conversation

    conversation = await database_sync_to_async(Conversation.objects.create)(
        owner=owner, model=chat_model
    )
    headers = [(b"cookie", await database_sync_to_async(session_cookie)(owner))]
    if origin is not None:
        headers.append((b"origin", origin))
    ws = WebsocketCommunicator(application, f"/ws/chat/{conversation.pk}/", headers=headers)
    connected, _ = await ws.connect()
    assert connected is False
    # The same request from the site's own origin is let in (the test is not vacuous).
    ws = WebsocketCommunicator(
        application,
        f"/ws/chat/{conversation.pk}/",
        headers=[*headers[:1], (b"origin", b"http://testserver")],
    )
    connected, _ = await ws.connect()
    assert connected is True
    await ws.disconnect()


def test_htmx_posts_need_the_csrf_token(owner, chat_model):
    from django.test import Client

    from apps.chat.models import Conversation

    conversation = Conversation.objects.create(owner=owner, model=chat_model, title="Before")
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    page = client.get(f"/chat/{conversation.pk}/")
    htmx = {"HX-Request": "true", "Origin": "http://testserver"}
    rename = f"/chat/{conversation.pk}/rename/"
    refused = client.post(rename, {"title": "Forged"}, headers=htmx)
    assert refused.status_code == 403
    conversation.refresh_from_db()
    assert conversation.title == "Before"
    # The page hands htmx the token in hx-headers; with it the same post goes through.
    token = page.content.decode().split('"X-CSRFToken": "', 1)[1].split('"', 1)[0]
    done = client.post(rename, {"title": "After"}, headers={**htmx, "X-CSRFToken": token})
    assert done.status_code == 200
    conversation.refresh_from_db()
    assert conversation.title == "After"
