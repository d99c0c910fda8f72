"""The Responses API over the fake engine and a real Celery worker (threads of this process):
the stored chain, the object's shape, ownership, cancel and delete, and bad input refused with
nothing written. The official client against the packaged model is in test_openai_client.py."""

from __future__ import annotations

import json
import time

import pytest

from apps.accounts.services import api_key_issue
from apps.api.models import StoredResponse
from apps.inference.models import Generation, UsageRecord

pytestmark = [pytest.mark.django_db(transaction=True)]

MODEL = "smollm2-135m-instruct"


@pytest.fixture
def auth(api_key) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {api_key}"}


def post(client, auth, body: dict | str, path: str = "/v1/responses"):
    data = body if isinstance(body, str) else json.dumps(body)
    return client.generic("POST", path, data, content_type="application/json", **auth)


@pytest.mark.usefixtures("inline_worker")
def test_a_chain_carries_its_turns_and_each_response_is_its_owners(client, auth, stranger):
    first = post(
        client,
        auth,
        {
            "model": MODEL,
            "input": "Hello there",
            "instructions": "Be brief.",
            "metadata": {"ticket": "T-1"},
        },
    )
    assert first.status_code == 200, first.content
    one = first.json()
    assert one["object"] == "response" and one["status"] == "completed"
    assert one["id"].startswith("resp_") and one["model"] == MODEL
    assert one["instructions"] == "Be brief." and one["metadata"] == {"ticket": "T-1"}
    (message,) = one["output"]
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["content"][0]["text"] == "Echo: Hello there"
    row = Generation.objects.get()
    assert row.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there"},
    ]
    assert one["usage"] == {
        "input_tokens": row.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": row.prompt_tokens + 3,
    }

    second = post(
        client,
        auth,
        {
            "model": MODEL,
            "input": [{"role": "user", "content": "And again"}],
            "previous_response_id": one["id"],
        },
    )
    assert second.status_code == 200, second.content
    second = second.json()
    assert second["previous_response_id"] == one["id"]
    assert second["output"][0]["content"][0]["text"] == "Echo: And again"
    # The earlier turns reach the model; the earlier instructions do not (OpenAI's rule).
    latest = Generation.objects.order_by("-created_at").first()
    assert latest.messages == [
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "Echo: Hello there"},
        {"role": "user", "content": "And again"},
    ]
    assert second["usage"]["input_tokens"] == latest.prompt_tokens > row.prompt_tokens
    assert UsageRecord.objects.filter(source="api", kind="chat").count() == 2

    fetched = client.get(f"/v1/responses/{one['id']}", **auth)
    assert fetched.status_code == 200 and fetched.json() == one
    items = client.get(f"/v1/responses/{second['id']}/input_items?order=asc", **auth).json()
    assert [item["content"] for item in items["data"]] == [
        [{"type": "input_text", "text": "And again"}]
    ]
    assert items["has_more"] is False and items["first_id"] == items["data"][0]["id"]

    other = {
        "HTTP_AUTHORIZATION": f"Bearer {api_key_issue(user=stranger, name='s', scopes=['inference'])[1]}"
    }
    for method, path in (
        ("GET", f"/v1/responses/{one['id']}"),
        ("GET", f"/v1/responses/{one['id']}/input_items"),
        ("DELETE", f"/v1/responses/{one['id']}"),
        ("POST", f"/v1/responses/{one['id']}/cancel"),
    ):
        assert client.generic(method, path, **other).status_code == 404, (method, path)
    refused = post(
        client, other, {"model": MODEL, "input": "Hi", "previous_response_id": one["id"]}
    )
    assert refused.status_code == 404
    assert refused.json()["error"]["param"] == "previous_response_id"

    deleted = client.delete(f"/v1/responses/{one['id']}", **auth)
    assert deleted.json() == {"id": one["id"], "object": "response", "deleted": True}
    assert client.get(f"/v1/responses/{one['id']}", **auth).status_code == 404
    # The chain after it still holds its turns: each response keeps its own context.
    third = post(
        client, auth, {"model": MODEL, "input": "Third", "previous_response_id": second["id"]}
    ).json()
    assert third["status"] == "completed"
    assert [m["content"] for m in Generation.objects.order_by("-created_at").first().messages] == [
        "Hello there",
        "Echo: Hello there",
        "And again",
        "Echo: And again",
        "Third",
    ]


@pytest.mark.usefixtures("inline_worker")
def test_an_unstored_response_answers_and_cannot_be_fetched(client, auth):
    answer = post(client, auth, {"model": MODEL, "input": "Hi", "store": False}).json()
    assert answer["store"] is False and answer["status"] == "completed"
    assert StoredResponse.objects.count() == 0
    assert client.get(f"/v1/responses/{answer['id']}", **auth).status_code == 404
    later = post(client, auth, {"model": MODEL, "input": "x", "previous_response_id": answer["id"]})
    assert later.status_code == 404


@pytest.mark.usefixtures("inline_worker")
def test_max_output_tokens_ends_it_incomplete(client, auth):
    answer = post(
        client, auth, {"model": MODEL, "input": "one two three four", "max_output_tokens": 2}
    ).json()
    assert answer["status"] == "incomplete"
    assert answer["incomplete_details"] == {"reason": "max_output_tokens"}
    assert answer["output"][0]["content"][0]["text"] == "Echo: one"
    assert answer["usage"]["output_tokens"] == 2


@pytest.mark.usefixtures("inline_worker")
def test_function_calls_and_their_outputs_come_back_as_the_conversation(client, auth):
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    body = {
        "model": MODEL,
        "tools": tools,
        "input": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city": "Paris"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "Sunny"},
        ],
    }
    answer = post(client, auth, body)
    assert answer.status_code == 200, answer.content
    assert answer.json()["tools"][0]["name"] == "get_weather"
    messages = Generation.objects.get().messages
    assert messages[2] == {
        "role": "assistant",
        "content": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        "</tool_call>",
    }
    assert messages[3]["role"] == "user" and "Sunny" in messages[3]["content"]

    stray = {**body, "input": [{"type": "function_call_output", "call_id": "nope", "output": "x"}]}
    refused = post(client, auth, stray)
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "input.0.call_id"
    assert Generation.objects.count() == 1


@pytest.mark.usefixtures("inline_worker")
def test_a_background_response_is_fetched_later_and_can_be_cancelled(client, auth):
    long = " ".join(f"w{i}" for i in range(300))
    started = post(client, auth, {"model": MODEL, "input": long, "background": True}).json()
    assert started["status"] in ("queued", "in_progress") and started["background"] is True
    cancelled = post(client, auth, {}, path=f"/v1/responses/{started['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.content
    deadline = time.monotonic() + 30
    while (now := client.get(f"/v1/responses/{started['id']}", **auth).json())["status"] in (
        "queued",
        "in_progress",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert now["status"] == "cancelled"
    assert now["incomplete_details"] == {"reason": "cancelled"}
    assert Generation.objects.get().output_ids != list(range(301))  # stopped before the end

    waited = post(client, auth, {"model": MODEL, "input": "Hi"}).json()
    refused = post(client, auth, {}, path=f"/v1/responses/{waited['id']}/cancel")
    assert refused.status_code == 400
    assert "background" in refused.json()["error"]["message"]


BAD = [
    ("no input", {"model": MODEL, "input": ""}, "input", "send the text"),
    (
        "an image",
        {
            "model": MODEL,
            "input": [
                {"role": "user", "content": [{"type": "input_image", "image_url": "http://x"}]}
            ],
        },
        "input",
        "text only",
    ),
    ("an unknown item", {"model": MODEL, "input": [{"type": "reasoning"}]}, "input", "type"),
    ("truncation auto", {"model": MODEL, "input": "x", "truncation": "auto"}, "truncation", ""),
    (
        "background unstored",
        {"model": MODEL, "input": "x", "background": True, "store": False},
        "store",
        "stored",
    ),
    (
        "a schema without a name",
        {
            "model": MODEL,
            "input": "x",
            "text": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
        },
        "text.format.name",
        "name",
    ),
    (
        "an unsupported keyword",
        {
            "model": MODEL,
            "input": "x",
            "text": {
                "format": {
                    "type": "json_schema",
                    "name": "t",
                    "schema": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
                }
            },
        },
        "text.format.schema.uniqueItems",
        "uniqueItems",
    ),
    (
        "a choice of no tool",
        {"model": MODEL, "input": "x", "tool_choice": {"type": "function", "name": "f"}},
        "tool_choice",
        "tools",
    ),
    (
        "too many metadata pairs",
        {"model": MODEL, "input": "x", "metadata": {str(i): "v" for i in range(17)}},
        "metadata",
        "metadata",
    ),
    ("an unknown model", {"model": "nope", "input": "x"}, "model", "nope"),
]


@pytest.mark.parametrize(("name", "body", "param", "says"), BAD, ids=[b[0] for b in BAD])
def test_bad_requests_are_refused_by_name_and_nothing_is_written(
    client, auth, name, body, param, says
):
    response = post(client, auth, body)
    assert response.status_code in (400, 404), response.content
    error = response.json()["error"]
    assert error["param"] is not None and error["param"].startswith(param), error
    assert says in error["message"], error
    assert "response_format" not in error["message"] and "messages" not in error["message"]
    assert Generation.objects.count() == 0 and StoredResponse.objects.count() == 0
