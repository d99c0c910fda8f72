"""The site's language: the browser's Accept-Language, the top bar's switch (kept in a cookie and
on the account, so it follows the account to another browser), Chinese dates, the chat socket in
the same language, and the API in English whatever the client asks."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import translation

from apps.accounts.models import User
from tests.chat.conftest import communicator
from tests.factories import ApiKeyFactory, ConversationFactory

pytestmark = pytest.mark.django_db(transaction=True)


def chinese(text: str) -> str:
    with translation.override("zh-hans"):
        translated = translation.gettext(text)
    assert translated != text, f"no Chinese for {text!r}"
    return translated


def signed_in(user: User, **headers: str) -> Client:
    client = Client(headers=headers)
    client.force_login(user)
    return client


def test_the_browsers_language_chooses_the_pages(owner, chat_model):
    asking = chinese("What would you like to ask?")
    page = signed_in(owner, accept_language="zh-CN,zh;q=0.9,en;q=0.5").get("/chat/")
    body = page.content.decode()
    assert page["Content-Language"] == "zh-hans"
    assert '<html lang="zh-hans">' in body and asking in body
    assert chinese("Send") in body and chinese("Fine-tuning") in body
    english = signed_in(owner, accept_language="en-GB,en").get("/chat/").content.decode()
    assert '<html lang="en">' in english and "What would you like to ask?" in english
    # Anyone, signed in or not: the login page too.
    login = Client(headers={"accept_language": "zh-Hans"}).get(reverse("accounts-login"))
    assert chinese("Log in") in login.content.decode()


def test_the_switch_is_remembered_on_the_account(owner, chat_model):
    client = signed_in(owner, accept_language="en")
    response = client.post(reverse("accounts-language"), {"language": "zh-hans", "next": "/chat/"})
    assert (response.status_code, response["Location"]) == (302, "/chat/")
    assert response.cookies[settings.LANGUAGE_COOKIE_NAME].value == "zh-hans"
    owner.refresh_from_db()
    assert owner.language == "zh-hans"
    assert chinese("What would you like to ask?") in client.get("/chat/").content.decode()
    # Another browser, which asks for English and has no cookie: the account's choice wins.
    elsewhere = signed_in(owner, accept_language="en")
    assert chinese("What would you like to ask?") in elsewhere.get("/chat/").content.decode()
    # And back.
    elsewhere.post(reverse("accounts-language"), {"language": "en", "next": "/chat/"})
    owner.refresh_from_db()
    assert owner.language == "en"
    assert "What would you like to ask?" in client.get("/chat/").content.decode()


def test_a_signed_out_switch_is_kept_in_the_cookie(chat_model):
    client = Client(headers={"accept_language": "en"})
    client.post(reverse("accounts-language"), {"language": "zh-hans", "next": "/accounts/login/"})
    assert chinese("Create an account") in client.get(reverse("accounts-signup")).content.decode()


def test_an_unknown_language_or_a_foreign_next_changes_nothing(owner):
    client = signed_in(owner)
    response = client.post(
        reverse("accounts-language"), {"language": "klingon", "next": "https://evil.example/"}
    )
    assert (response.status_code, response["Location"]) == (302, "/")
    assert settings.LANGUAGE_COOKIE_NAME not in response.cookies
    owner.refresh_from_db()
    assert owner.language == ""


def test_dates_are_written_the_chinese_way(owner):
    key = ApiKeyFactory(user=owner, name="cli")
    when = key.created_at
    client = signed_in(owner, accept_language="zh-Hans")
    body = client.get(reverse("accounts-keys")).content.decode()
    assert f"{when.year}年{when.month}月{when.day}日 {when:%H:%M}" in body
    english = signed_in(owner, accept_language="en").get(reverse("accounts-keys")).content.decode()
    assert f"{when:%Y-%m-%d %H:%M}" in english


def test_the_api_answers_in_english_whatever_it_is_asked(owner, api_key):
    client = Client(headers={"authorization": f"Bearer {api_key}", "accept_language": "zh-Hans"})
    owner.language = "zh-hans"
    owner.save()
    # A refusal whose words the site translates (apps.core.documents): here in English.
    part = {"type": "file", "file": {"filename": "deck.pptx", "file_data": "UEs="}}
    response = client.post(
        "/v1/chat/completions",
        {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": [part]}]},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response["Content-Language"] == "en"
    assert response.json()["error"]["message"] == (
        "Invalid value for messages.0.content.0: “deck.pptx” is not a kind of document read "
        "here: use a text, Markdown, CSV, HTML or PDF file (.txt, .md, .csv, .html or .pdf)."
    )


def test_the_admin_speaks_chinese_too(owner):
    owner.is_staff = owner.is_superuser = True
    owner.save()
    body = signed_in(owner, accept_language="zh-Hans").get("/admin/").content.decode()
    assert chinese("Site administration") in body  # Django's own catalogue


async def test_the_chat_socket_speaks_the_accounts_language(owner, chat_model):
    owner.language = "zh-hans"
    await database_sync_to_async(owner.save)()
    conversation = await database_sync_to_async(ConversationFactory)(owner=owner, model=chat_model)
    ws = await communicator(owner, conversation.pk)
    assert (await ws.connect())[0]
    await ws.send_json_to({"action": "dance"})
    event = await ws.receive_json_from(timeout=5)
    assert event == {
        "type": "error",
        "message": chinese("Unknown action; use send, stop, regenerate, rerun or edit."),
    }
    await ws.send_json_to({"action": "send", "text": "   "})
    event = await ws.receive_json_from(timeout=5)
    assert event["message"] == chinese("Type a %(what)s first.") % {"what": chinese("message")}
    await ws.disconnect()
