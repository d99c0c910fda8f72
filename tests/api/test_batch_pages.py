"""The site's batches page: the account's own batches with their progress, and their files to
download; another account sees none of them."""

from __future__ import annotations

import json

import pytest

from apps.accounts.services import api_key_issue
from apps.api.batches import batch_create, batch_file_create
from apps.api.models import ApiFile, Batch

pytestmark = pytest.mark.django_db

MODEL = "smollm2-135m-instruct"


def a_batch(owner) -> Batch:
    key = api_key_issue(user=owner, name="batch", scopes=["inference"])[0]
    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
        }
        for i in range(4)
    ]
    data = "\n".join(json.dumps(x) for x in lines).encode()
    upload = batch_file_create(owner=owner, filename="mine.jsonl", data=data)
    return batch_create(
        api_key=key,
        input_file_id=upload.openai_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata=None,
    )


def test_the_page_shows_the_accounts_batches_with_their_progress(
    client, owner, stranger, chat_model
):
    batch = a_batch(owner)
    Batch.objects.filter(pk=batch.pk).update(status="running", completed=2, failed=1)
    client.force_login(owner)
    page = client.get("/batches/").content.decode()
    assert batch.openai_id in page and "in_progress" in page
    assert '<progress max="4" value="3">75%</progress>' in page and "(1 failed)" in page
    assert 'hx-trigger="every 2s"' in page  # it refreshes while the batch runs
    partial = client.get("/batches/", HTTP_HX_REQUEST="true").content.decode()
    assert partial.lstrip().startswith('<div id="batch-list"')
    download = client.get(f"/batches/files/file-{batch.input_file_id.hex}/")
    assert download.status_code == 200 and b'"custom_id": "r0"' in download.content
    assert 'filename="mine.jsonl"' in download["Content-Disposition"]

    client.force_login(stranger)
    assert batch.openai_id not in client.get("/batches/").content.decode()
    assert client.get(f"/batches/files/file-{batch.input_file_id.hex}/").status_code == 404


def test_an_ended_batch_stops_the_refresh(client, owner, chat_model):
    batch = a_batch(owner)
    Batch.objects.filter(pk=batch.pk).update(status="succeeded", completed=4)
    client.force_login(owner)
    page = client.get("/batches/").content.decode()
    assert "completed" in page and "every 2s" not in page


def test_an_account_deleted_takes_its_batches_and_files_with_it(owner, chat_model):
    batch = a_batch(owner)
    owner.delete()
    assert not Batch.objects.filter(pk=batch.pk).exists()
    assert not ApiFile.objects.exists()
