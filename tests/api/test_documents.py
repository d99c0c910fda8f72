"""Documents through the API: OpenAI's ``file`` content part (chat completions) and
``input_file`` (Responses), with the file inline as ``file_data``; its text goes into the prompt
in the same form as the chat's, and a file that cannot be read is refused with nothing written.
The fake engine echoes the last user turn as the prompt holds it."""

from __future__ import annotations

import base64
import json

import pytest
from openai import BadRequestError, OpenAI

from apps.api.models import StoredResponse
from apps.inference.models import Generation
from tests.documents import text_pdf

pytestmark = [pytest.mark.django_db(transaction=True)]

MODEL = "smollm2-135m-instruct"
PDF = text_pdf([["Quarterly report.", "Revenue grew by four percent."]])
BLOCK = (
    '<document name="report.pdf">\nQuarterly report.\nRevenue grew by four percent.\n</document>'
)


def data_url(data: bytes, kind: str = "application/pdf") -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


@pytest.fixture
def auth(api_key) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {api_key}"}


def post(client, auth, path: str, body: dict):
    return client.generic("POST", path, json.dumps(body), content_type="application/json", **auth)


@pytest.mark.usefixtures("inline_worker")
def test_a_file_part_puts_the_documents_text_before_the_message(live_server, api_key):
    client = OpenAI(base_url=f"{live_server.url}/v1", api_key=api_key, max_retries=0)
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Summarise the report."},
                    {
                        "type": "file",
                        "file": {"filename": "report.pdf", "file_data": data_url(PDF)},
                    },
                ],
            }
        ],
    )
    assert answer.choices[0].message.content == f"Echo: {BLOCK}\n\nSummarise the report."
    row = Generation.objects.get()
    assert row.messages == [{"role": "user", "content": f"{BLOCK}\n\nSummarise the report."}]


@pytest.mark.usefixtures("inline_worker")
def test_an_input_file_in_a_response_and_its_stored_input(client, auth):
    notes = base64.b64encode(b"Otters hold hands.").decode()  # bare base64 is taken too
    response = post(
        client,
        auth,
        "/v1/responses",
        {
            "model": MODEL,
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What do they hold?"},
                        {"type": "input_file", "filename": "notes.txt", "file_data": notes},
                    ],
                }
            ],
        },
    )
    assert response.status_code == 200, response.content
    text = response.json()["output"][0]["content"][0]["text"]
    assert text == (
        'Echo: <document name="notes.txt">\nOtters hold hands.\n</document>\n\nWhat do they hold?'
    )
    # The stored input names the file; its bytes are not kept.
    stored = StoredResponse.objects.get()
    assert stored.input_items[0]["content"][1] == {"type": "input_file", "filename": "notes.txt"}


@pytest.mark.parametrize(
    ("part", "message"),
    [
        (
            {"type": "file", "file": {"file_id": "file-abc"}},
            "Invalid value for messages.0.content.0: file_id is not supported here: send the file "
            "itself as file_data (base64, or a data: URL) with its filename",
        ),
        (
            {"type": "file", "file": {"filename": "deck.pptx", "file_data": data_url(b"PK")}},
            "Invalid value for messages.0.content.0: “deck.pptx” is not a kind of document read "
            "here: use a text, Markdown, CSV, HTML or PDF file (.txt, .md, .csv, .html or .pdf).",
        ),
        (
            {"type": "file", "file": {"filename": "a.txt", "file_data": "not base64!"}},
            "Invalid value for messages.0.content.0: file_data is not valid base64",
        ),
        (
            {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
            "Invalid value for messages.0.content.0: Input should be a part of type text or file "
            "(the models here read text)",
        ),
    ],
)
def test_a_part_that_cannot_be_read_is_refused_and_nothing_written(client, auth, part, message):
    response = post(
        client,
        auth,
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": [part]}]},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["message"], error["param"], error["code"]) == (
        message,
        "messages.0.content.0",
        "invalid_parameter",
    )
    assert not Generation.objects.exists()


def test_an_oversized_file_is_refused_by_its_size(client, auth, settings):
    settings.CHAT_MAX_DOCUMENT_BYTES = 100
    response = post(
        client,
        auth,
        "/v1/chat/completions",
        {
            "model": MODEL,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "file", "file": {"filename": "r.pdf", "file_data": data_url(PDF)}}
                    ],
                }
            ],
        },
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        f"Invalid value for messages.0.content.0: the file has {len(PDF)} bytes; the limit is 100"
    )


def test_the_official_client_reports_the_refusal(live_server, api_key):
    client = OpenAI(base_url=f"{live_server.url}/v1", api_key=api_key, max_retries=0)
    with pytest.raises(BadRequestError) as refused:
        client.chat.completions.create(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "file",
                            "file": {"filename": "scan.pdf", "file_data": data_url(text_pdf([[]]))},
                        }
                    ],
                }
            ],
        )
    assert "has no text layer" in refused.value.message
