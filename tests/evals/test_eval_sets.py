"""Eval sets over the site: an upload checked line by line (a bad file refused by line number,
nothing written), the demo set, the items as stored, and each set its owner's alone."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils.html import escape

from apps.evals.models import EvalItem, EvalSet

pytestmark = pytest.mark.django_db


def jsonl(*rows: object) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def upload(client, data: bytes, name: str = "", filename: str = "set.jsonl"):
    return client.post(
        reverse("evals-upload"), {"name": name, "file": SimpleUploadedFile(filename, data)}
    )


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


def test_an_upload_keeps_each_item_as_written(owner_client, owner):
    data = jsonl(
        {"input": "2 + 2?", "ideal": "4"},
        {
            "input": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Capital of France?"},
            ],
            "ideal": ["Paris", "paris"],
            "metadata": {"topic": "geography"},
        },
        {"input": "Billing or bug? My card was charged twice.", "label": "billing"},
        {"input": "A colour as JSON", "schema": {"type": "object", "required": ["color"]}},
    )
    response = upload(owner_client, data, filename="mine.jsonl")
    eval_set = EvalSet.objects.get(owner=owner)
    assert response.status_code == 302
    assert response["Location"] == reverse("evals-set", args=[eval_set.pk])
    assert (eval_set.name, eval_set.filename) == ("mine", "mine.jsonl")
    items = list(eval_set.items.all())
    assert [(i.line, i.input, i.ideal, i.label, i.schema, i.metadata) for i in items] == [
        (1, "2 + 2?", ["4"], "", None, {}),
        (
            2,
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Capital of France?"},
            ],
            ["Paris", "paris"],
            "",
            None,
            {"topic": "geography"},
        ),
        (3, "Billing or bug? My card was charged twice.", [], "billing", None, {}),
        (4, "A colour as JSON", [], "", {"type": "object", "required": ["color"]}, {}),
    ]
    assert items[0].messages() == [{"role": "user", "content": "2 + 2?"}]
    page = owner_client.get(response["Location"]).content.decode()
    assert "Capital of France?" in page and "4 items" in page


def test_a_bad_file_is_refused_by_line_and_nothing_is_written(owner_client):
    data = jsonl(
        {"input": "fine", "ideal": "yes"},
        "not json",
        {"input": "no ideal"},
        {"input": "x", "ideal": "y", "expected": "z"},
        {
            "input": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
            "ideal": "c",
        },
        {"input": "x", "ideal": ""},
        {"input": "x", "schema": {"type": "nonsense"}},
        "",
        {"input": "x", "ideal": "y", "label": True},
    )
    response = upload(owner_client, data)
    assert response.status_code == 400
    body = response.content.decode()
    assert "8 lines are not valid items; fix them and upload again." in body
    for line, message in [
        (2, "not valid JSON (Expecting value at column 1)"),
        (3, 'an item needs "ideal" (or a "label" or "schema" to grade by)'),
        (4, "unknown keys “expected”; an item has input, ideal, label, schema and metadata"),
        (5, "the last message of the input must be the user's"),
        (6, '"ideal" must be a non-empty string or a list of them'),
        (7, '"schema" is not a valid JSON schema: '),
        (8, "an empty line; each line must hold one JSON object"),
        (9, '"label" must be non-empty text or a whole number'),
    ]:
        assert escape(f"line {line}: {message}") in body, (line, message)
    assert "line 1:" not in body
    assert not EvalSet.objects.exists() and not EvalItem.objects.exists()


def test_the_demo_set_has_its_sixty_items(owner_client, owner):
    response = owner_client.post(reverse("evals-demo"))
    eval_set = EvalSet.objects.get(owner=owner)
    assert response["Location"] == reverse("evals-set", args=[eval_set.pk])
    items = list(eval_set.items.all())
    assert len(items) == 60
    categories = [i.metadata["category"] for i in items]
    assert {c: categories.count(c) for c in set(categories)} == {
        "facts": 20,
        "arithmetic": 20,
        "formatting": 12,
        "mascot": 8,
    }
    assert all(i.ideal or i.schema for i in items)
    assert owner_client.get(reverse("evals-demo-file")).status_code == 200


def test_eval_sets_are_their_owners_alone(owner_client, owner, stranger):
    upload(owner_client, jsonl({"input": "secret question", "ideal": "secret answer"}))
    eval_set = EvalSet.objects.get()
    client = Client()
    client.force_login(stranger)
    assert client.get(reverse("evals-set", args=[eval_set.pk])).status_code == 404
    assert client.post(reverse("evals-set-delete", args=[eval_set.pk])).status_code == 404
    assert "secret question" not in client.get(reverse("evals-index")).content.decode()
    assert EvalSet.objects.filter(pk=eval_set.pk).exists()
    # The owner deletes it, items and all.
    owner_client.post(reverse("evals-set-delete", args=[eval_set.pk]))
    assert not EvalSet.objects.exists() and not EvalItem.objects.exists()
