"""The /v1 API with the official `openai` client against a live server (the production shape:
ASGI server process, a real `celery worker` with the packaged model, Postgres, Redis)."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import httpx
import numpy as np
import openai
import pydantic
import pytest
from django.utils import timezone

from apps.accounts.models import ApiKey
from apps.accounts.services import api_key_issue, api_key_revoke
from apps.inference.models import EmbeddingBatch, Generation, UsageRecord
from tests.helpers import wait_for

pytestmark = [
    pytest.mark.model,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("real_worker"),
]

MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "Name the capital of France."}]
STORY = [{"role": "user", "content": "Write a long story about a dragon who learns to paint."}]


def function_tool(name: str, description: str) -> dict:
    parameters = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 40}},
        "required": ["city"],
        "additionalProperties": False,
    }
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


TOOLS = [
    function_tool("get_weather", "The weather in a city now."),
    function_tool("get_time", "The time in a city now."),
]


def client_for(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)


@pytest.fixture
def client(live_server_url, api_key) -> openai.OpenAI:
    return client_for(live_server_url, api_key)


def test_models_lists_what_the_account_may_use(client, live_server_url, chat_model, stranger):
    assert sorted(m.id for m in client.models.list()) == ["all-minilm-l6-v2", MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    chat_model.visibility = "staff"
    chat_model.save()
    assert [m.id for m in client.models.list()] == ["all-minilm-l6-v2"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(MODEL)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4)
    stranger.is_staff = True
    stranger.save()
    staff_key = api_key_issue(user=stranger, name="staff", scopes=["inference"])[1]
    assert MODEL in [m.id for m in client_for(live_server_url, staff_key).models.list()]


def test_chat_completion(client, owner):
    response = client.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=24
    )
    choice = response.choices[0]
    assert "Paris" in choice.message.content
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert response.id.startswith("chatcmpl-") and response.model == MODEL
    row = Generation.objects.get(user=owner)
    assert row.output == choice.message.content
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (
        row.prompt_tokens,
        row.completion_tokens,
    )
    assert response.usage.total_tokens == row.prompt_tokens + row.completion_tokens


def test_logit_bias_penalties_and_user_reach_the_engine_and_the_record(client, owner):
    plain = client.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=12
    )
    first = Generation.objects.get(user=owner).output_ids[0]
    banned = client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        temperature=0,
        max_tokens=12,
        logit_bias={str(first): -100},
        frequency_penalty=0.5,
        presence_penalty=0.5,
        user="end-user-7",
    )
    assert banned.choices[0].message.content != plain.choices[0].message.content
    row = Generation.objects.filter(user=owner).latest("created_at")
    assert row.output_ids[0] != first and row.end_user == "end-user-7"
    assert (
        row.params["logit_bias"] == {str(first): -100.0} and row.params["frequency_penalty"] == 0.5
    )
    with pytest.raises(openai.BadRequestError) as refused:  # an id past the vocabulary
        client.chat.completions.create(
            model=MODEL, messages=QUESTION, max_tokens=4, logit_bias={"10000000": 5}
        )
    assert "vocabulary has 49152 tokens" in refused.value.message
    # The worker refused it before reading the prompt: nothing generated, nothing metered.
    failed = Generation.objects.filter(user=owner).latest("created_at")
    assert (failed.status, failed.output, failed.completion_tokens) == ("failed", "", 0)
    assert UsageRecord.objects.filter(user=owner).count() == 2  # the two answers above


def test_streamed_chat_completion_joins_into_the_stored_answer(client, owner):
    # An answer long enough (about a second) to arrive in several flushes even on a busy machine.
    counting = [{"role": "user", "content": "Count from 1 to 30, separated by commas."}]
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=counting,
            temperature=0,
            max_tokens=64,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 3
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    usage = chunks[-1].usage
    row = Generation.objects.get(user=owner)
    assert text == row.output and "3" in text
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        row.prompt_tokens,
        row.completion_tokens,
    )


def test_n_choices_with_a_seed(client, owner):
    response = client.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=1.0, seed=3, n=2, max_tokens=8
    )
    assert [c.index for c in response.choices] == [0, 1]
    rows = Generation.objects.filter(user=owner).order_by("created_at")
    assert [r.params["seed"] for r in rows] == [3, 4]
    assert response.usage.completion_tokens == sum(r.completion_tokens for r in rows)


def test_completions(client):
    response = client.completions.create(
        model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=6
    )
    assert response.object == "text_completion"
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=6, stream=True
        )
        if c.choices
    )
    assert streamed == response.choices[0].text
    assert "Paris" in streamed


def test_chat_logprobs_plain_and_streamed(client, owner):
    arguments = {"model": MODEL, "messages": QUESTION, "temperature": 0, "max_tokens": 12}
    plain = client.chat.completions.create(**arguments)
    assert plain.choices[0].logprobs is None  # not asked for
    response = client.chat.completions.create(**arguments, logprobs=True, top_logprobs=3)
    choice = response.choices[0]
    assert choice.message.content == plain.choices[0].message.content
    content = choice.logprobs.content
    assert len(content) == response.usage.completion_tokens
    assert "".join(entry.token for entry in content).startswith(choice.message.content.strip())
    for entry in content:
        assert [t.token for t in entry.top_logprobs][0] == entry.token  # greedy: the top one
        values = [t.logprob for t in entry.top_logprobs]
        assert len(values) == 3 and values == sorted(values, reverse=True)
    streamed = [
        entry
        for chunk in client.chat.completions.create(
            **arguments, logprobs=True, top_logprobs=3, stream=True
        )
        if chunk.choices and chunk.choices[0].logprobs
        for entry in chunk.choices[0].logprobs.content
    ]
    assert [(e.token, round(e.logprob, 4)) for e in streamed] == [
        (e.token, round(e.logprob, 4)) for e in content
    ]
    assert Generation.objects.filter(user=owner).count() == 3


def test_completion_logprobs_with_the_prompt_echoed(client):
    prompt = "The capital of France is"
    arguments = {"model": MODEL, "prompt": prompt, "temperature": 0, "max_tokens": 4}
    response = client.completions.create(**arguments, logprobs=2, echo=True)
    choice = response.choices[0]
    assert choice.text.startswith(prompt)
    logprobs = choice.logprobs
    usage = response.usage
    assert len(logprobs.tokens) == usage.prompt_tokens + usage.completion_tokens
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None
    assert all(value <= 0 for value in logprobs.token_logprobs[1:])
    assert "".join(logprobs.tokens[: usage.prompt_tokens]) == prompt
    assert logprobs.text_offset[usage.prompt_tokens] == len(prompt)
    assert all(len(top) <= 2 for top in logprobs.top_logprobs[1:])
    chunks = list(client.completions.create(**arguments, logprobs=2, echo=True, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == choice.text
    streamed = [
        t
        for c in chunks
        if c.choices and c.choices[0].logprobs
        for t in c.choices[0].logprobs.tokens
    ]
    assert streamed == logprobs.tokens
    echoed = client.completions.create(**arguments, echo=True)  # the text alone
    assert echoed.choices[0].text == choice.text and echoed.choices[0].logprobs is None


class City(pydantic.BaseModel):
    name: str
    country: str
    population_millions: float
    is_capital: bool


def test_structured_outputs_parse_into_the_schema_plain_and_streamed(client, owner):
    question = [{"role": "user", "content": "Tell me about Paris."}]
    completion = client.chat.completions.parse(
        model=MODEL, messages=question, response_format=City, temperature=0, max_tokens=80
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and isinstance(choice.message.parsed, City)
    assert Generation.objects.get(user=owner).output == choice.message.content
    # Any JSON object, streamed: the pieces join into one.
    streamed = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(
            model=MODEL,
            messages=question,
            response_format={"type": "json_object"},
            temperature=0,
            max_tokens=60,
            stream=True,
        )
        if chunk.choices
    )
    assert isinstance(json.loads(streamed), dict)
    # Completions take it as an extra.
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    }
    text = (
        client.completions.create(
            model=MODEL,
            prompt="Q: What is the capital of France?\nA as JSON:",
            temperature=0,
            max_tokens=30,
            extra_body={
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "a", "schema": schema},
                }
            },
        )
        .choices[0]
        .text
    )
    assert list(json.loads(text)) == ["answer"]
    # Cut short, it says so: the SDK's parse refuses rather than claims a result.
    with pytest.raises(openai.LengthFinishReasonError):
        client.chat.completions.parse(
            model=MODEL, messages=question, response_format=City, temperature=0, max_tokens=5
        )


def test_tool_calls_required_named_streamed_and_answered(client, owner):
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    arguments = {
        "model": MODEL,
        "messages": question,
        "tools": TOOLS,
        "temperature": 0,
        "max_tokens": 100,  # a call is about 30 tokens
    }
    response = client.chat.completions.create(**arguments, tool_choice="required")
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls
    assert calls and {c.function.name for c in calls} <= {"get_weather", "get_time"}
    assert all(isinstance(json.loads(c.function.arguments)["city"], str) for c in calls)
    assert len({c.id for c in calls}) == len(calls)
    named = client.chat.completions.create(
        **arguments, tool_choice={"type": "function", "function": {"name": "get_time"}}
    )
    (call,) = named.choices[0].message.tool_calls
    assert call.function.name == "get_time" and named.choices[0].finish_reason == "tool_calls"
    # Left to choose, the model may answer in words; whichever it does, the answer says so.
    auto = client.chat.completions.create(**arguments).choices[0]
    if auto.finish_reason == "tool_calls":
        assert auto.message.content is None
        assert {c.function.name for c in auto.message.tool_calls} <= {"get_weather", "get_time"}
    else:
        assert auto.message.content and auto.message.tool_calls is None
    # Streamed, the deltas carry the same calls.
    chunks = list(client.chat.completions.create(**arguments, tool_choice="required", stream=True))
    streamed = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or ()]
    assert [(t.function.name, t.function.arguments) for t in streamed] == [
        (c.function.name, c.function.arguments) for c in calls
    ]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    # The result goes back in the next turn, after the assistant message that made the call.
    result = {"role": "tool", "tool_call_id": calls[0].id, "content": '{"sky": "clear", "c": 18}'}
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[*question, choice.message, result],
        tools=TOOLS,
        tool_choice="none",
        temperature=0,
        max_tokens=30,
    )
    assert answer.choices[0].message.content and answer.choices[0].message.tool_calls is None
    row = Generation.objects.filter(user=owner).latest("created_at")
    assert '"sky": "clear"' in row.messages[-1]["content"]
    assert row.messages[-2]["content"].startswith("<tool_call>")


def test_responses_plain_streamed_chained_retrieved_and_deleted(
    client, live_server_url, owner, stranger
):
    first = client.responses.create(
        model=MODEL,
        input="Name the capital of France.",
        instructions="Answer in one short sentence.",
        temperature=0,
        max_output_tokens=24,
    )
    assert first.status in ("completed", "incomplete") and "Paris" in first.output_text
    row = Generation.objects.get(user=owner)
    assert first.output_text == row.output
    assert (first.usage.input_tokens, first.usage.output_tokens) == (
        row.prompt_tokens,
        row.completion_tokens,
    )
    # Streamed: the deltas join into the text the final event carries.
    events = list(
        client.responses.create(
            model=MODEL,
            input="Name the capital of Italy.",
            temperature=0,
            max_output_tokens=24,
            stream=True,
        )
    )
    assert [events[0].type, events[1].type] == ["response.created", "response.in_progress"]
    assert events[-1].type in ("response.completed", "response.incomplete")
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas and deltas == events[-1].response.output_text
    with client.responses.stream(
        model=MODEL, input="Name the capital of Italy.", temperature=0, max_output_tokens=24
    ) as stream:
        assert stream.get_final_response().output_text == deltas
    assert [e.sequence_number for e in events] == list(range(len(events)))
    # A chain: the second turn reads the first (its input tokens count it, and the engine
    # reuses the first turn's cells) without the client sending it again.
    second = client.responses.create(
        model=MODEL,
        input="And of Germany?",
        previous_response_id=first.id,
        temperature=0,
        max_output_tokens=24,
    )
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens - 1
    latest = Generation.objects.filter(user=owner).latest("created_at")
    assert [m["role"] for m in latest.messages] == ["user", "assistant", "user"]
    assert client.responses.retrieve(second.id).output_text == second.output_text
    items = client.responses.input_items.list(second.id)
    assert [i.content[0].text for i in items.data] == ["And of Germany?"]
    # Structured output through text.format: the SDK's parse.
    # (Greedy: sampled at the API's default temperature 1, a name ran past the 80 tokens once.)
    parsed = client.responses.parse(
        model=MODEL,
        input="Tell me about Paris.",
        text_format=City,
        max_output_tokens=80,
        temperature=0,
    )
    assert isinstance(parsed.output_parsed, City)
    # Another account sees none of it.
    other = client_for(
        live_server_url, api_key_issue(user=stranger, name="s", scopes=["inference"])[1]
    )
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model=MODEL, input="Hi", previous_response_id=first.id)
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


def test_responses_function_calls_round_trip(client):
    tools = [{"type": "function", **tool["function"]} for tool in TOOLS]
    called = client.responses.create(
        model=MODEL,
        input="What is the weather in Paris?",
        tools=tools,
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_output_tokens=100,
    )
    (call,) = called.output
    assert call.type == "function_call" and call.name in ("get_weather", "get_time")
    assert isinstance(json.loads(call.arguments)["city"], str)
    # The SDK's stream helper assembles the same call from the events.
    with client.responses.stream(
        model=MODEL,
        input="What is the weather in Paris?",
        tools=tools,
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_output_tokens=100,
    ) as stream:
        streamed = list(stream)
        final = stream.get_final_response()
    done = [e.item for e in streamed if e.type == "response.output_item.done"]
    assert [(i.name, i.arguments) for i in done] == [(call.name, call.arguments)]
    assert [(i.name, i.arguments) for i in final.output] == [(call.name, call.arguments)]
    answer = client.responses.create(
        model=MODEL,
        previous_response_id=called.id,
        input=[
            {"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "clear"}'}
        ],
        tools=tools,
        tool_choice="none",
        temperature=0,
        max_output_tokens=30,
    )
    assert answer.output[0].type == "message" and answer.output_text


COUNTRIES = ["France", "Italy", "Spain", "Japan", "Kenya", "Peru", "Canada", "Egypt"]


def batch_line(custom_id: str, body: dict) -> str:
    return json.dumps(
        {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    )


def run_batch(client, bodies: list[dict]):
    text = "\n".join(batch_line(f"q{i}", body) for i, body in enumerate(bodies))
    upload = client.files.create(file=("batch.jsonl", text.encode()), purpose="batch")
    return client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )


def wait_batch(client, batch_id: str, statuses: set[str], timeout: float = 300):
    return wait_for(
        lambda: (b := client.batches.retrieve(batch_id)).status in statuses and b,
        timeout=timeout,
        interval=1,
        what=f"the batch to be {statuses}",
    )


def test_a_batch_gives_each_request_the_answer_it_gets_alone(client, owner):
    ApiKey.objects.filter(user=owner).update(requests_per_minute=10_000)  # 40 asked alone too
    bodies = []
    for i in range(40):
        country = COUNTRIES[i % len(COUNTRIES)]
        ask = [f"Name the capital of {country}.", f"Say one word about {country}."][i % 2]
        bodies.append(
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": ask}],
                "temperature": 0,
                "max_tokens": 6 + i % 7,
                **({"stop": ["."]} if i % 5 == 0 else {}),
            }
        )
    batch = run_batch(client, bodies)
    done = wait_batch(client, batch.id, {"completed", "failed"})
    assert done.status == "completed" and done.request_counts.completed == 40
    lines = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    assert sorted(line["custom_id"] for line in lines) == sorted(f"q{i}" for i in range(40))
    for line in lines:
        body = bodies[int(line["custom_id"][1:])]
        alone = client.chat.completions.create(**body).choices[0].message.content
        assert line["response"]["body"]["choices"][0]["message"]["content"] == alone, line
    assert UsageRecord.objects.filter(user=owner, source="batch").count() == 40

    # A malformed file is refused by line, and nothing is kept.
    bad = "\n".join([batch_line("a", bodies[0]), "{oops", batch_line("a", bodies[1])])
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("bad.jsonl", bad.encode()), purpose="batch")
    assert [d["line"] for d in caught.value.body["details"]] == [2, 3]
    assert not [f for f in client.files.list() if f.filename == "bad.jsonl"]

    # Cancelled, it keeps what finished.
    long = [{**body, "max_tokens": 60} for body in bodies[:24]]
    cancelled = client.batches.cancel(run_batch(client, long).id)
    assert cancelled.status in ("cancelling", "cancelled")
    ended = wait_batch(client, cancelled.id, {"cancelled"})
    finished = ended.request_counts.completed
    out = client.files.content(ended.output_file_id).text.splitlines() if finished else []
    errors = client.files.content(ended.error_file_id).text.splitlines()
    assert len(out) == finished and len(out) + len(errors) == 24
    assert {json.loads(e)["error"]["code"] for e in errors} == {"batch_cancelled"}


def test_an_embeddings_batch_gives_the_vectors_asked_alone(client):
    texts = ["a red apple", "a blue sea", "a green field"]
    lines = "\n".join(
        json.dumps(
            {
                "custom_id": f"e{i}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "all-minilm-l6-v2", "input": text},
            }
        )
        for i, text in enumerate(texts)
    )
    upload = client.files.create(file=("emb.jsonl", lines.encode()), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    done = wait_batch(client, batch.id, {"completed", "failed"})
    assert done.status == "completed", done
    rows = {
        (row := json.loads(x))["custom_id"]: row
        for x in client.files.content(done.output_file_id).text.splitlines()
    }
    for i, text in enumerate(texts):
        alone = client.embeddings.create(model="all-minilm-l6-v2", input=text).data[0].embedding
        vector = rows[f"e{i}"]["response"]["body"]["data"][0]["embedding"]
        assert np.allclose(vector, alone, atol=1e-5)


def test_an_interactive_request_overtakes_a_running_batch(client):
    bodies = [
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"Say the number {i}."}],
            "temperature": 0,
            "max_tokens": 4,
        }
        for i in range(200)
    ]
    batch = run_batch(client, bodies)
    wait_for(
        lambda: client.batches.retrieve(batch.id).request_counts.completed >= 8,
        timeout=120,
        interval=0.5,
        what="the batch under way",
    )
    answer = client.chat.completions.create(
        model=MODEL, messages=QUESTION, temperature=0, max_tokens=24
    )
    assert "Paris" in answer.choices[0].message.content
    # Served while the batch still ran: it did not wait behind the 200.
    assert client.batches.retrieve(batch.id).status == "in_progress"
    client.batches.cancel(batch.id)
    wait_batch(client, batch.id, {"cancelled"})


def test_an_unsupported_schema_keyword_is_400_naming_it_and_writes_nothing(client):
    schema = {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}},
    }
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": schema}},
        )
    body = caught.value.body
    assert body["param"] == "response_format.json_schema.schema.properties.tags.uniqueItems"
    assert body["message"].startswith('The JSON Schema keyword "uniqueItems" is not supported')
    assert body["code"] == "invalid_parameter"
    assert not Generation.objects.exists()


@pytest.mark.parametrize(
    ("kwargs", "param", "message"),
    [
        (
            {"response_format": {"type": "json_schema"}},
            "response_format.json_schema",
            'response_format.json_schema ({"name": ..., "schema": {...}}) goes with '
            '"type": "json_schema", and only with it.',
        ),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice.function.name",
            'tool_choice names the function "nope", which is not among the tools.',
        ),
        (
            {"messages": [*QUESTION, {"role": "tool", "tool_call_id": "call_x", "content": "1"}]},
            "messages.1.tool_call_id",
            'messages[1] answers the tool call "call_x", but no earlier assistant message made '
            "a call with that id.",
        ),
        (
            {"tools": TOOLS, "response_format": {"type": "json_object"}},
            "response_format",
            "response_format cannot be combined with tools (a call is JSON already); send one "
            'of them, or tool_choice "none".',
        ),
        (
            {"temperature": 3},
            "temperature",
            "Invalid value for temperature: Input should be less than or equal to 2",
        ),
        (
            {"extra_body": {"best_of": 2}},
            "best_of",
            "Unknown parameter: best_of",
        ),
        (
            {"frequency_penalty": 2.5},
            "frequency_penalty",
            "Invalid value for frequency_penalty: Input should be less than or equal to 2",
        ),
        ({"messages": []}, "messages", "messages must not be empty"),
        ({"top_logprobs": 3}, "top_logprobs", "top_logprobs needs logprobs: true as well."),
        (
            {"logprobs": True, "top_logprobs": 21},
            "top_logprobs",
            "Invalid value for top_logprobs: Input should be less than or equal to 20",
        ),
        ({"n": 9}, "n", "Invalid value for n: Input should be less than or equal to 4"),
        (
            {"max_tokens": 0},
            "max_tokens",
            "Invalid value for max_tokens: Input should be greater than or equal to 1",
        ),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter_and_write_nothing(
    client, kwargs, param, message
):
    arguments = {"model": MODEL, "messages": QUESTION, **kwargs}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**arguments)
    assert caught.value.status_code == 400
    assert caught.value.body == {
        "message": message,
        "type": "invalid_request_error",
        "param": param,
        "code": "invalid_parameter",
    }
    assert not Generation.objects.exists()


@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_over_the_context_is_400_context_length_exceeded(client, stream):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL,
            max_tokens=16,
            stream=stream,
            messages=[{"role": "user", "content": "word " * 9000}],
        )
    assert caught.value.body["code"] == "context_length_exceeded"
    assert caught.value.body["param"] == "messages"
    assert "exceed the model's context of 8192 tokens" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model=MODEL, max_output_tokens=16, stream=stream, input="word " * 9000
        )
    assert caught.value.body["code"] == "context_length_exceeded"
    assert caught.value.body["param"] == "input"


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-17", messages=QUESTION)
    assert caught.value.body["code"] == "model_not_found"
    assert not Generation.objects.exists()


def test_missing_bad_expired_and_revoked_keys_are_401(live_server_url, owner, api_key):
    missing = httpx.get(f"{live_server_url}/v1/models")
    assert missing.status_code == 401
    assert missing.json() == {
        "error": {
            "message": "Missing API key: send it as 'Authorization: Bearer <key>'.",
            "type": "authentication_error",
            "param": None,
            "code": "missing_api_key",
        }
    }
    for bad in ["pg-nope", api_key[:-2] + "xx"]:
        with pytest.raises(openai.AuthenticationError):
            client_for(live_server_url, bad).models.list()
    expired_row, expired = api_key_issue(
        user=owner,
        name="old",
        scopes=["inference"],
        expires_at=timezone.now() - timedelta(seconds=1),
    )
    with pytest.raises(openai.AuthenticationError):
        client_for(live_server_url, expired).models.list()
    client = client_for(live_server_url, api_key)
    assert client.models.list().data
    api_key_revoke(api_key=ApiKey.objects.get(user=owner, name="tests"))
    with pytest.raises(openai.AuthenticationError) as caught:
        client.models.list()
    assert caught.value.body["code"] == "invalid_api_key"


def test_a_read_only_key_is_403_for_generation(live_server_url, owner, chat_model):
    key = api_key_issue(user=owner, name="ro", scopes=[ApiKey.Scope.READ_ONLY])[1]
    client = client_for(live_server_url, key)
    assert client.models.list().data
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model=MODEL, messages=QUESTION)
    assert caught.value.body["code"] == "insufficient_scope"
    assert caught.value.body["message"] == (
        "This API key does not have the inference scope; create a key with it on the API keys page."
    )
    assert not Generation.objects.exists()
    inference_only = api_key_issue(user=owner, name="inf", scopes=[ApiKey.Scope.INFERENCE])[1]
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client_for(live_server_url, inference_only).fine_tuning.jobs.list()
    assert "does not have the fine-tuning scope;" in caught.value.body["message"]


def test_a_body_too_large_is_413(live_server_url, api_key):
    response = httpx.post(
        f"{live_server_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {api_key}"},
        content=b'{"model": "x", "pad": "' + b"x" * 3_000_000 + b'"}',
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_a_client_that_disconnects_mid_stream_cancels_its_generation(
    live_server_url, api_key, owner
):
    with httpx.stream(
        "POST",
        f"{live_server_url}/v1/chat/completions",
        timeout=60,
        headers={"Authorization": f"Bearer {api_key}"},
        json={
            "model": MODEL,
            "messages": STORY,
            "max_tokens": 400,
            "stream": True,
            "temperature": 1.0,
            "seed": 1,
        },
    ) as response:
        assert response.headers["x-accel-buffering"] == "no"
        lines = 0
        for line in response.iter_lines():
            lines += line.startswith("data:")
            if lines == 4:
                break
    at_close = Generation.objects.get(user=owner).output_ids
    row = wait_for(
        lambda: (g := Generation.objects.get(user=owner)).is_finished and g,
        timeout=10,
        what="the generation to stop",
    )
    assert row.status == Generation.Status.CANCELLED
    # Stopped within a few steps of the disconnect (the stop is polled every 0.2 s), not run on
    # to its 400 tokens: count tokens, not seconds, so a busy machine cannot fail it.
    assert 0 < row.completion_tokens < len(at_close) + 40
    # What was generated before the stop is metered all the same.
    assert (row.usage.prompt_tokens, row.usage.completion_tokens) == (
        row.prompt_tokens,
        row.completion_tokens,
    )


def test_another_accounts_key_cannot_see_a_private_model(live_server_url, stranger, chat_model):
    chat_model.visibility = "staff"
    chat_model.save()
    key = api_key_issue(user=stranger, name="s", scopes=["inference"])[1]
    client = client_for(live_server_url, key)
    assert MODEL not in [m.id for m in client.models.list()]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=MODEL, messages=QUESTION)


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_embeddings(client, owner):
    texts = [
        "The cat sits on the mat.",
        "A cat is sitting on a rug.",
        "Quarterly revenue grew by four percent.",
    ]
    response = client.embeddings.create(model="all-minilm-l6-v2", input=texts)
    vectors = [d.embedding for d in response.data]
    assert [len(v) for v in vectors] == [384, 384, 384]
    assert abs(cosine(vectors[0], vectors[0]) - 1) < 1e-4  # normalised
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3
    assert response.usage.prompt_tokens > 15
    single = client.embeddings.create(
        model="all-minilm-l6-v2", input=texts[0], encoding_format="base64"
    )
    decoded = np.frombuffer(base64.b64decode(single.data[0].embedding), dtype=np.float32)
    assert max(abs(x - y) for x, y in zip(decoded.tolist(), vectors[0], strict=True)) < 1e-6


@pytest.mark.parametrize(
    ("kwargs", "param", "code"),
    [
        ({"input": []}, "input", "invalid_parameter"),
        ({"input": ["ok", "  "]}, "input", "invalid_parameter"),
        ({"input": "word " * 600}, "input", "context_length_exceeded"),
        ({"model": MODEL, "input": "hi"}, "model", "invalid_parameter"),
        ({"input": "hi", "dimensions": 128}, "dimensions", "invalid_parameter"),
    ],
)
def test_bad_embedding_requests_are_400(client, kwargs, param, code):
    arguments = {"model": "all-minilm-l6-v2", **kwargs}
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(**arguments)
    assert (caught.value.body["param"], caught.value.body["code"]) == (param, code)
    if code == "invalid_parameter":  # refused before anything was queued
        assert not EmbeddingBatch.objects.exists()
    else:  # the worker measured the input: the refused request is on record, as failed
        assert EmbeddingBatch.objects.get().status == "failed"


def test_usage_rows_add_up_to_what_the_api_returned(client, owner):
    chat = client.chat.completions.create(
        model=MODEL, messages=QUESTION, max_tokens=8, temperature=0
    )
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    embedded = client.embeddings.create(model="all-minilm-l6-v2", input=["a cat", "a dog"])
    key_row = ApiKey.objects.get(user=owner, name="tests")
    rows = list(UsageRecord.objects.filter(user=owner).order_by("created_at"))
    assert [(r.kind, r.source, r.api_key_id) for r in rows] == [
        ("chat", "api", key_row.pk),
        ("chat", "api", key_row.pk),
        ("embeddings", "api", key_row.pk),
    ]
    reported = [chat.usage, chunks[-1].usage, embedded.usage]
    assert [(r.prompt_tokens, r.completion_tokens) for r in rows] == [
        (u.prompt_tokens, getattr(u, "completion_tokens", 0)) for u in reported
    ]


SYSTEM = " ".join(
    f"Rule {i}: answer briefly, in English, and name your sources when you have them."
    for i in range(12)
)


def test_a_next_turn_reuses_the_conversations_cells_and_says_so(client, live_server_url, settings):
    """llama.cpp keeps a finished answer's KV: the next turn of the conversation reads only what
    is new, the usage says how much was cached, and /metrics counts it."""
    first_turn = [{"role": "system", "content": SYSTEM}, *QUESTION]
    first = client.chat.completions.create(
        model=MODEL, messages=first_turn, temperature=0, max_tokens=12
    )
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    second_turn = [
        *first_turn,
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "And of Germany?"},
    ]
    second = client.chat.completions.create(
        model=MODEL, messages=second_turn, temperature=0, max_tokens=12
    )
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert first.usage.prompt_tokens <= cached < second.usage.prompt_tokens
    assert Generation.objects.order_by("created_at").last().cached_tokens == cached

    auth = {"Authorization": f"Bearer {settings.METRICS_TOKEN}"}

    def counted() -> float:
        text = httpx.get(f"{live_server_url}/metrics", headers=auth).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("playground_prompt_tokens_cached_total{")
        )

    wait_for(lambda: counted() >= cached, what="cached prompt tokens in /metrics")


def test_rate_limit_is_429_with_retry_after_and_headers(live_server_url, owner, chat_model):
    api_key, key = api_key_issue(user=owner, name="slow", scopes=["inference"])
    api_key.requests_per_minute = 2
    api_key.save()
    headers = {"Authorization": f"Bearer {key}"}
    first = httpx.get(f"{live_server_url}/v1/models", headers=headers)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    httpx.get(f"{live_server_url}/v1/models", headers=headers)
    with pytest.raises(openai.RateLimitError) as caught:
        client_for(live_server_url, key).models.list()
    assert caught.value.body["code"] == "rate_limit_exceeded"
    assert 1 <= int(caught.value.response.headers["retry-after"]) <= 60
    assert caught.value.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_daily_token_quota_is_429_once_used_up(client, owner):
    owner.daily_token_quota = 30
    owner.save()
    first = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=QUESTION, max_tokens=8, temperature=0
    )
    assert first.headers["x-ratelimit-limit-tokens"] == "30"
    assert first.headers["x-ratelimit-remaining-tokens"] == "30"
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8)
    assert caught.value.body["code"] == "quota_exceeded"
    assert caught.value.body["message"].startswith("Daily token quota reached: ")
    assert int(caught.value.response.headers["retry-after"]) > 0
    assert Generation.objects.count() == 1
