"""The error paths, swept for Python internals: no repr (quotes, ``None``, an enum's dotted name),
class name or traceback reaches an API error body, a form's or page's error, or a socket event.
Each message is also checked to say something."""

from __future__ import annotations

import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from apps.accounts.models import ApiKey
from apps.chat.models import Preset
from apps.core.errors import failure_for_people, quoted
from tests.api.test_bad_input import CASES as CHAT_BODIES
from tests.chat.conftest import communicator
from tests.factories import ApiKeyFactory, ConversationFactory

MODEL = "smollm2-135m-instruct"
HELLO = [{"role": "user", "content": "Hello"}]

INTERNALS = re.compile(
    r"Traceback|File \"|object at 0x|<class |<function |<built-in "
    r"|\b[A-Z]\w*\.[A-Z]\w*\.[A-Z][A-Z_]+\b"  # an enum member's repr: ApiKey.Scope.FINE_TUNING
    r"|\b[A-Z][a-z]+(?:[A-Z][a-z]+)*(?:Error|Exception)\b"  # a class name: ValidationError
    r"|(?<![\w’'])'[^'\s]+'(?![\w’])"  # a value in a repr's quotes: 'gpt-17'
    r"|\b(?:None|True|False)\b(?! of)|\{'|\['|instance of [A-Z]"
)


def internals_in(message: str) -> list[str]:
    return INTERNALS.findall(message)


def test_the_sweep_finds_what_it_looks_for():
    """The detector itself, on messages this platform once sent and on ones it sends now."""
    for bad in (
        "This API key does not have the ApiKey.Scope.FINE_TUNING scope.",
        "The model 'gpt-17' does not exist or you do not have access to it.",
        "Unknown export version None; expected 1.",
        "Invalid value for tool_choice: Input should be 'auto', 'none' or 'required'",
        "Traceback (most recent call last):",
        "Training failed: ValidationError: 1 validation error",
        "got {'role': 'user'}",
        "<object object at 0x7f3a2c>",
        "Input should be a valid dictionary or instance of ChatMessage",
    ):
        assert internals_in(bad), bad
    for fine in (
        "The model “gpt-17” does not exist or you do not have access to it.",
        "The model's context is 2048 tokens; the prompt's is 3000.",
        'Send JSON, such as {"action": "send", "text": "Hi"}.',
        "None of the lines could be read.",
        "invalid_request_error",
    ):
        assert not internals_in(fine), fine


def api_errors(client: Client, key: str) -> list[tuple[str, dict]]:
    """(what, error body) for each API error path tried."""
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}

    def post(path: str, body: object) -> dict:
        raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
        response = client.generic("POST", path, raw, content_type="application/json", **auth)
        assert 400 <= response.status_code < 500, (path, body, response.status_code)
        return response.json()["error"]

    def get(path: str, **headers: str) -> dict:
        response = client.get(path, **(headers or auth))
        assert 400 <= response.status_code < 500, (path, response.status_code)
        return response.json()["error"]

    tried = [(name, post("/v1/chat/completions", body)) for name, body, *_ in CHAT_BODIES]
    chat = {"model": MODEL, "messages": HELLO}
    tried += [
        ("unknown model", post("/v1/chat/completions", {**chat, "model": "gpt-17"})),
        (
            "embeddings model for chat",
            post("/v1/chat/completions", {**chat, "model": "all-minilm-l6-v2"}),
        ),
        ("a wrong tool_choice", post("/v1/chat/completions", {**chat, "tool_choice": "maybe"})),
        (
            "a wrong role",
            post("/v1/chat/completions", {**chat, "messages": [{"role": "robot", "content": "x"}]}),
        ),
        (
            "an unsupported schema keyword",
            post(
                "/v1/chat/completions",
                {
                    **chat,
                    "response_format": {
                        "type": "json_schema",
                        "json_schema": {
                            "name": "x",
                            "schema": {"type": "string", "format": "jpeg"},
                        },
                    },
                },
            ),
        ),
        ("a chat model for embeddings", post("/v1/embeddings", {"model": MODEL, "input": "x"})),
        ("completions without a prompt", post("/v1/completions", {"model": MODEL})),
        ("no such response", get("/v1/responses/resp_0123")),
        (
            "a previous response that is not there",
            post(
                "/v1/responses", {"model": MODEL, "input": "x", "previous_response_id": "resp_nope"}
            ),
        ),
        ("responses with a number for input", post("/v1/responses", {"model": MODEL, "input": 5})),
        ("no such batch", get("/v1/batches/batch_nope")),
        (
            "a batch of a file that is not there",
            post(
                "/v1/batches",
                {
                    "input_file_id": "file-nope",
                    "endpoint": "/v1/chat/completions",
                    "completion_window": "24h",
                },
            ),
        ),
        (
            "a batch window of a week",
            post(
                "/v1/batches",
                {
                    "input_file_id": "file-nope",
                    "endpoint": "/v1/chat/completions",
                    "completion_window": "7d",
                },
            ),
        ),
        ("paging after nothing", get("/v1/batches?after=batch_nope")),
        ("no such file", get("/v1/files/file-nope")),
        ("no such model", get("/v1/models/gpt-17")),
        ("the fine-tuning scope missing", get("/v1/fine_tuning/jobs")),
        ("no key", get("/v1/models", HTTP_X_NONE="1")),
        ("a wrong key", get("/v1/models", HTTP_AUTHORIZATION="Bearer sk-wrong")),
    ]
    bad_line = SimpleUploadedFile("b.jsonl", b'{"custom_id": "a", "method": "GET"}\nnot json\n')
    response = client.post("/v1/files", {"purpose": "batch", "file": bad_line}, **auth)
    tried.append(("a bad batch file", response.json()["error"]))
    return tried


@pytest.mark.django_db
def test_api_error_bodies_hold_no_python_internals(client, owner, chat_model):
    key = ApiKeyFactory(user=owner, scopes=[ApiKey.Scope.INFERENCE]).key
    found = {}
    for what, error in api_errors(client, key):
        assert error["message"].strip(), what
        if internals_in(error["message"]):
            found[what] = error["message"]
    assert found == {}


def alerts(html: str) -> list[str]:
    """The text of a page's error elements (alerts and form error lists)."""
    parts = re.findall(r'role="alert"[^>]*>(.*?)</', html, re.S)
    parts += re.findall(r'class="errorlist[^"]*"[^>]*>(.*?)</ul>', html, re.S)
    return [re.sub(r"<[^>]+>", " ", p).strip() for p in parts if p.strip()]


@pytest.mark.django_db
def test_form_errors_on_the_site_hold_no_python_internals(client, owner, chat_model):
    client.force_login(owner)
    conversation = ConversationFactory(owner=owner, model=chat_model)
    Preset.objects.get_or_create(owner=None, name="Summarise", defaults={"system_prompt": "x"})
    settings_form = {"model": "gpt-17", "temperature": 0, "top_p": 1, "max_tokens": 8}

    def upload(export: object) -> SimpleUploadedFile:
        raw = export if isinstance(export, bytes) else json.dumps(export).encode()
        return SimpleUploadedFile("c.json", raw)

    export = {"format": "playground.conversation", "version": 1, "model": "gpt-17", "messages": []}
    tries = [
        (
            "settings, unknown model",
            client.post(f"/chat/{conversation.pk}/settings/", settings_form),
        ),
        (
            "settings, a wrong number",
            client.post(
                f"/chat/{conversation.pk}/settings/",
                {**settings_form, "model": MODEL, "temperature": "hot"},
            ),
        ),
        (
            "settings, bad schema JSON",
            client.post(
                f"/chat/{conversation.pk}/settings/",
                {**settings_form, "model": MODEL, "json_schema": "{nope"},
            ),
        ),
        (
            "a preset named as a built-in",
            client.post(f"/chat/{conversation.pk}/presets/save/", {"name": "summarise"}),
        ),
        ("arrival, unknown model", client.post("/chat/new/", {"text": "hi", "model": "gpt-17"})),
        ("arrival, blank", client.post("/chat/new/", {"text": " "})),
        ("import, not JSON", client.post("/chat/import/", {"file": upload(b"{nope")})),
        (
            "import, version null",
            client.post("/chat/import/", {"file": upload({**export, "version": None})}),
        ),
        ("import, unknown model", client.post("/chat/import/", {"file": upload(export)})),
        (
            "signup, a short password",
            Client().post(
                "/accounts/signup/", {"username": "x", "password1": "a", "password2": "b"}
            ),
        ),
    ]
    found = {}
    for what, response in tries:
        assert 200 <= response.status_code < 500, (what, response.status_code)
        shown = alerts(response.content.decode())
        assert shown, what  # the refusal is shown, in words
        bad = [m for m in shown if internals_in(m)]
        if bad:
            found[what] = bad
    assert found == {}


@pytest.mark.django_db(transaction=True)
async def test_socket_errors_hold_no_python_internals(owner, chat_model):
    from channels.db import database_sync_to_async

    conversation = await database_sync_to_async(ConversationFactory)(owner=owner, model=chat_model)
    ws = await communicator(owner, conversation.pk)
    await ws.connect()
    payloads: list[object] = [
        "send hello",
        {"action": "dance"},
        {"action": "send", "text": None},
        {"action": "edit", "message": "nope", "text": "x"},
        {"action": "edit", "message": None, "text": None},
        {"action": "rerun"},
        {"action": "regenerate"},
    ]
    found = {}
    for payload in payloads:
        if isinstance(payload, str):
            await ws.send_to(text_data=payload)
        else:
            await ws.send_json_to(payload)
        event = await ws.receive_json_from(timeout=5)
        assert event["type"] == "error" and event["message"].strip(), payload
        if internals_in(event["message"]):
            found[str(payload)] = event["message"]
    await ws.disconnect()
    assert found == {}


def test_values_and_failures_are_named_in_words():
    assert quoted("gpt-17") == "“gpt-17”"
    assert quoted(None) == "“null”" and quoted({"a": 1}) == '“{"a": 1}”'
    assert quoted("x" * 200) == "“" + "x" * 79 + "…”"
    assert failure_for_people(OSError("No space left on device")) == "No space left on device"
    for internal in (KeyError("lora_a"), TypeError("'NoneType' object"), RuntimeError("")):
        assert (
            failure_for_people(internal) == "an internal error (the worker's log has the details)"
        )
