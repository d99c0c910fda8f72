"""The Batch API over the fake engine and a real Celery worker (threads of this process): input
files checked line by line, a batch run to its output and error files at batch priority,
cancelled with its results so far, paused by the daily quota, and another account's 404. The
official client against the packaged model is in test_openai_client.py."""

from __future__ import annotations

import json
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from apps.accounts.services import api_key_issue
from apps.api.models import ApiFile, Batch, BatchRequest
from apps.inference.models import Generation, Priority, UsageRecord

pytestmark = [pytest.mark.django_db(transaction=True)]

MODEL = "smollm2-135m-instruct"
CHAT = "/v1/chat/completions"


@pytest.fixture
def auth(api_key) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {api_key}"}


def line(custom_id: str, text: str, url: str = CHAT, **body) -> dict:
    if url == "/v1/embeddings":
        request = {"model": "all-minilm-l6-v2", "input": text, **body}
    elif url == "/v1/completions":
        request = {"model": MODEL, "prompt": text, **body}
    else:
        request = {"model": MODEL, "messages": [{"role": "user", "content": text}], **body}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": request}


def upload(client, auth, lines: list[dict | str]):
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n"
    return client.post(
        "/v1/files",
        {"purpose": "batch", "file": SimpleUploadedFile("in.jsonl", text.encode())},
        **auth,
    )


def create(client, auth, file_id: str, endpoint: str = CHAT, **extra):
    body = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h", **extra}
    return client.post("/v1/batches", json.dumps(body), content_type="application/json", **auth)


def wait_for_status(client, auth, batch_id: str, statuses: set[str], timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        batch = client.get(f"/v1/batches/{batch_id}", **auth).json()
        if batch["status"] in statuses:
            return batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.5)  # within the key's rate limit


def results(client, auth, file_id: str | None) -> dict[str, dict]:
    if file_id is None:
        return {}
    text = client.get(f"/v1/files/{file_id}/content", **auth).content.decode()
    rows = [json.loads(x) for x in text.splitlines()]
    return {row["custom_id"]: row for row in rows}


@pytest.mark.usefixtures("inline_worker")
def test_a_batch_runs_each_request_once_into_its_output_file(client, auth, owner, stranger):
    lines = [line(f"chat-{i}", f"question {i}", max_tokens=8) for i in range(6)]
    uploaded = upload(client, auth, lines)
    assert uploaded.status_code == 200, uploaded.content
    assert uploaded.json()["purpose"] == "batch"
    created = create(client, auth, uploaded.json()["id"], metadata={"team": "a"})
    assert created.status_code == 200, created.content
    batch = created.json()
    assert batch["status"] in ("validating", "in_progress") and batch["metadata"] == {"team": "a"}
    assert batch["request_counts"] == {"total": 6, "completed": 0, "failed": 0}

    done = wait_for_status(client, auth, batch["id"], {"completed"})
    assert done["request_counts"] == {"total": 6, "completed": 6, "failed": 0}
    assert done["error_file_id"] is None and done["completed_at"] >= done["in_progress_at"]
    out = results(client, auth, done["output_file_id"])
    assert sorted(out) == [f"chat-{i}" for i in range(6)]
    for i in range(6):
        response = out[f"chat-{i}"]["response"]
        assert response["status_code"] == 200
        message = response["body"]["choices"][0]["message"]["content"]
        assert message == f"Echo: question {i}"
    # One generation per request, at batch priority, metered as batch.
    assert Generation.objects.filter(priority=Priority.BATCH).count() == 6
    assert UsageRecord.objects.filter(source="batch").count() == 6
    assert BatchRequest.objects.filter(generation__isnull=False).count() == 6

    listed = client.get("/v1/batches", **auth).json()
    assert [b["id"] for b in listed["data"]] == [batch["id"]]
    files = client.get("/v1/files?purpose=batch_output", **auth).json()["data"]
    assert [f["id"] for f in files] == [done["output_file_id"]]

    other = {
        "HTTP_AUTHORIZATION": "Bearer "
        + api_key_issue(user=stranger, name="s", scopes=["inference"])[1]
    }
    assert client.get(f"/v1/batches/{batch['id']}", **other).status_code == 404
    assert client.post(f"/v1/batches/{batch['id']}/cancel", **other).status_code == 404
    assert client.get(f"/v1/files/{done['output_file_id']}/content", **other).status_code == 404
    assert create(client, other, uploaded.json()["id"]).status_code == 404
    assert client.get("/v1/batches", **other).json()["data"] == []


@pytest.mark.usefixtures("inline_worker")
def test_mixed_outcomes_go_to_the_output_and_error_files(client, auth):
    lines = [
        line("fine", "hello", max_tokens=8),
        line("breaks", "this [fail] breaks", max_tokens=8),
        line("long", "one two three four five", max_tokens=2),
    ]
    batch = create(client, auth, upload(client, auth, lines).json()["id"]).json()
    done = wait_for_status(client, auth, batch["id"], {"completed"})
    assert done["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    out = results(client, auth, done["output_file_id"])
    errors = results(client, auth, done["error_file_id"])
    assert sorted(out) == ["fine", "long"] and sorted(errors) == ["breaks"]
    assert out["long"]["response"]["body"]["choices"][0]["finish_reason"] == "length"
    failed = errors["breaks"]["response"]
    assert failed["status_code"] == 500
    assert failed["body"]["error"]["message"] == "The fake model failed on purpose."


@pytest.mark.usefixtures("inline_worker")
def test_cancel_stops_the_batch_and_keeps_what_finished(client, auth, settings):
    settings.BATCH_CONCURRENCY = 1
    lines = [line(f"r{i}", " ".join(["word"] * 40), max_tokens=60) for i in range(5)]
    batch = create(client, auth, upload(client, auth, lines).json()["id"]).json()
    deadline = time.monotonic() + 30
    while Batch.objects.get().completed < 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    cancelling = client.post(f"/v1/batches/{batch['id']}/cancel", **auth).json()
    assert cancelling["status"] in ("cancelling", "cancelled")
    done = wait_for_status(client, auth, batch["id"], {"cancelled"})
    assert done["cancelled_at"] is not None and done["cancelling_at"] is not None
    out = results(client, auth, done["output_file_id"])
    errors = results(client, auth, done["error_file_id"])
    assert len(out) >= 1 and len(out) + len(errors) == 5
    assert {e["error"]["code"] for e in errors.values()} == {"batch_cancelled"}
    assert done["request_counts"]["completed"] == len(out)
    # Not every request ran: the rest never started.
    assert BatchRequest.objects.filter(started=False).count() >= 1


@pytest.mark.usefixtures("inline_worker")
def test_a_used_up_quota_pauses_the_batch_until_there_is_room(client, auth, owner, chat_model):
    owner.daily_token_quota = 1
    owner.save()
    UsageRecord.objects.create(
        user=owner, model=chat_model, source="api", kind="chat", prompt_tokens=5
    )
    # Accepted all the same: it waits, paused, rather than failing its requests.
    batch = create(client, auth, upload(client, auth, [line("a", "hi", max_tokens=4)]).json()["id"])
    assert batch.status_code == 200, batch.content
    batch = batch.json()
    deadline = time.monotonic() + 30
    while not (paused := client.get(f"/v1/batches/{batch['id']}", **auth).json())["paused"]:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert paused["status"] == "in_progress" and "quota" in paused["paused"]
    assert Generation.objects.count() == 0
    # The account's other reads still answer; new generation is refused.
    assert client.get("/v1/batches", **auth).status_code == 200
    asked = client.post(
        "/v1/responses",
        json.dumps({"model": MODEL, "input": "hi"}),
        content_type="application/json",
        **auth,
    )
    assert asked.status_code == 429
    owner.daily_token_quota = None
    owner.save()
    done = wait_for_status(client, auth, batch["id"], {"completed"})
    assert done["paused"] is None and done["request_counts"]["completed"] == 1


@pytest.mark.usefixtures("inline_worker")
def test_completions_and_embeddings_run_as_batches_too(client, auth):
    completions = upload(client, auth, [line("c", "Once upon", url="/v1/completions")])
    done = wait_for_status(
        client,
        auth,
        create(client, auth, completions.json()["id"], "/v1/completions").json()["id"],
        {"completed"},
    )
    (only,) = results(client, auth, done["output_file_id"]).values()
    assert only["response"]["body"]["choices"][0]["text"] == "Echo: Once upon"


BAD_FILES = [
    ("not JSON", ["{not json"], 1, "not valid JSON"),
    ("a duplicate custom_id", [line("a", "x"), line("a", "y")], 2, "used by an earlier line"),
    ("a wrong method", [{**line("a", "x"), "method": "GET"}], 1, "method"),
    ("an unknown url", [{**line("a", "x"), "url": "/v1/images"}], 1, "url must be one of"),
    ("a bad body", [line("a", "x"), line("b", "y", temperature="hot")], 2, "temperature"),
    ("a streamed body", [line("a", "x", stream=True)], 1, "stream cannot be true"),
    ("several choices", [line("a", "x"), line("b", "x", n=2)], 2, "n must be 1"),
    ("a missing field", [{"custom_id": "a", "method": "POST", "url": CHAT}], 1, "body is missing"),
    ("no requests", [""], 1, "no requests"),
]


@pytest.mark.parametrize(("name", "lines", "at", "says"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_a_bad_input_file_is_refused_by_line_and_nothing_is_kept(
    client, auth, name, lines, at, says
):
    response = upload(client, auth, lines)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid_file" and error["param"] == "file"
    assert error["details"][0]["line"] == at and says in error["details"][0]["message"], error
    assert ApiFile.objects.count() == 0


def test_a_batch_whose_lines_do_not_fit_its_endpoint_or_model_is_refused(client, auth):
    uploaded = upload(
        client,
        auth,
        [
            line("a", "x"),
            line("b", "x", url="/v1/completions"),
            {
                **line("c", "x"),
                "body": {"model": "nope", "messages": [{"role": "user", "content": "x"}]},
            },
        ],
    ).json()
    response = create(client, auth, uploaded["id"])
    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert [d["line"] for d in details] == [2, 3]
    assert "not /v1/chat/completions" in details[0]["message"] and "nope" in details[1]["message"]
    for body, param in (
        ({"endpoint": "/v1/images"}, "endpoint"),
        ({"completion_window": "1h"}, "completion_window"),
        ({"input_file_id": "file-0123"}, "input_file_id"),
    ):
        refused = create(client, auth, **{"file_id": uploaded["id"], **body})
        assert refused.status_code in (400, 404) and refused.json()["error"]["param"] == param
    assert Batch.objects.count() == 0 and BatchRequest.objects.count() == 0
    assert Generation.objects.count() == 0


@pytest.mark.usefixtures("inline_worker")
def test_a_batch_past_its_window_expires_and_keeps_what_finished(client, auth, settings):
    settings.BATCH_CONCURRENCY = 1
    lines = [line(f"r{i}", " ".join(["word"] * 40), max_tokens=60) for i in range(4)]
    batch = create(client, auth, upload(client, auth, lines).json()["id"]).json()
    deadline = time.monotonic() + 30
    while Batch.objects.get().completed < 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    Batch.objects.update(expires_at=timezone.now())  # its 24 hours are up
    done = wait_for_status(client, auth, batch["id"], {"expired"})
    assert done["expired_at"] is not None and done["cancelled_at"] is None
    out = results(client, auth, done["output_file_id"])
    errors = results(client, auth, done["error_file_id"])
    assert len(out) >= 1 and len(out) + len(errors) == 4
    assert {e["error"]["code"] for e in errors.values()} == {"batch_expired"}
