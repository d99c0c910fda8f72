"""Eval runs through a real Celery worker (threads of this process, on Redis; the fake engine
echoes each item's last user turn): every item answered once and graded once, the grades
stored as the graders give them, the aggregates a recomputation from them gives, a cancel that
keeps what was graded, and each run its owner's alone."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from apps.evals.models import EvalResult, EvalRun, EvalSet
from apps.evals.runner import _tally, aggregates
from apps.evals.stats import bootstrap
from apps.inference.models import Generation
from tests.helpers import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("inline_worker")]

ITEMS = [
    {"input": "alpha", "ideal": "Echo: alpha"},
    {"input": "beta", "ideal": ["gamma", "delta"]},
    {"input": "42", "ideal": "42"},
    {"input": '{"a": 1}', "schema": {"type": "object"}},
]


@pytest.fixture
def owner_client(owner, chat_model):
    client = Client()
    client.force_login(owner)
    return client


def make_set(client, items=ITEMS) -> EvalSet:
    data = "".join(json.dumps(i) + "\n" for i in items).encode()
    client.post(reverse("evals-upload"), {"file": SimpleUploadedFile("s.jsonl", data)})
    return EvalSet.objects.latest("created_at")


def start(client, eval_set, **graders) -> EvalRun:
    form = {"model": "smollm2-135m-instruct", "temperature": 0, "max_tokens": 64, **graders}
    response = client.post(reverse("evals-run-create", args=[eval_set.pk]), form)
    assert response.status_code == 302, response.content.decode()[-2000:]
    return EvalRun.objects.latest("created_at")


def finished(run: EvalRun, timeout: float = 60) -> EvalRun:
    wait_for(lambda: EvalRun.objects.get(pk=run.pk).is_finished, timeout=timeout)
    return EvalRun.objects.get(pk=run.pk)


def test_a_run_answers_and_grades_every_item_once(owner_client, owner):
    eval_set = make_set(owner_client)
    run = start(
        owner_client,
        eval_set,
        string_check="on",
        operation="eq",
        numeric="on",
        tolerance=0,
        json_valid="on",
    )
    run = finished(run)
    assert run.status == "succeeded", run.error_message
    assert (run.total, run.graded) == (4, 4)
    assert run.graders == [
        {"type": "string_check", "operation": "eq"},
        {"type": "numeric", "tolerance": 0.0},
        {"type": "json_valid"},
    ]
    results = list(EvalResult.objects.filter(run=run).select_related("item", "generation"))
    # Answered once each, at batch priority, greedy with the run's recorded seed.
    generations = Generation.objects.filter(pk__in=[r.generation_id for r in results])
    assert generations.count() == 4 and Generation.objects.count() == 4
    assert {g.priority for g in generations} == {"batch"}
    assert {g.params["temperature"] for g in generations} == {0.0}
    passes = {r.item.line: [g["passed"] for g in r.grades] for r in results}
    assert passes == {
        1: [True, None, False],  # "Echo: alpha" equals its ideal; no number in it; not JSON
        2: [False, None, False],
        3: [False, True, False],  # "Echo: 42": not "42" exactly, but its number is 42
        4: [None, None, False],  # an item with no ideal: not string- or number-checked
    }
    numeric = next(r for r in results if r.item.line == 3).grades[1]
    assert numeric == {
        "passed": True,
        "score": 1.0,
        "reason": "42 is 0 from the nearest ideal (tolerance 0)",
    }
    # The aggregates are a recomputation from the stored grades, interval and all.
    assert run.aggregates == aggregates(run, results)
    exact = run.aggregates[0]
    assert (exact["grader"], exact["passed"], exact["failed"], exact["errored"], exact["n"]) == (
        "string_check (eq)",
        1,
        2,
        0,
        3,
    )
    again = bootstrap([1.0, 0.0, 0.0], seed=run.seed)
    assert (exact["mean"], exact["low"], exact["high"]) == (again.mean, again.low, again.high)
    assert run.aggregates[2]["mean"] == 0.0  # no answer was JSON
    # Looking again grades nothing twice.
    stamps = dict(EvalResult.objects.filter(run=run).values_list("pk", "graded_at"))
    _tally(run)
    assert dict(EvalResult.objects.filter(run=run).values_list("pk", "graded_at")) == stamps
    # The page shows the figures and every answer.
    page = owner_client.get(reverse("evals-run", args=[run.pk])).content.decode()
    assert "string_check (eq)" in page and "Echo: beta" in page and 'id="aggregates"' in page


def test_a_run_needs_a_grader_and_writes_nothing_without_one(owner_client):
    eval_set = make_set(owner_client)
    form = {"model": "smollm2-135m-instruct", "temperature": 0, "max_tokens": 64}
    response = owner_client.post(reverse("evals-run-create", args=[eval_set.pk]), form)
    assert response.status_code == 400
    assert "Choose at least one grader." in response.content.decode()
    assert not EvalRun.objects.exists() and not EvalResult.objects.exists()


def test_a_cancelled_run_sums_up_what_was_graded(owner_client, settings):
    settings.EVAL_CONCURRENCY = 1
    long = " ".join(f"w{i}" for i in range(300))  # 6 s on the fake engine if not stopped
    eval_set = make_set(owner_client, [{"input": long, "ideal": "x"}, {"input": "y", "ideal": "z"}])
    run = start(owner_client, eval_set, string_check="on", operation="like")
    wait_for(
        lambda: EvalResult.objects.filter(run=run, generation__status="running").exists(),
        timeout=30,
    )
    owner_client.post(reverse("evals-run-cancel", args=[run.pk]))
    run = finished(run, timeout=30)
    assert run.status == "cancelled"
    assert run.graded == 0 and run.aggregates[0]["n"] == 0
    assert not EvalResult.objects.filter(run=run, item__line=2, started=True).exists()


def test_runs_are_their_owners_alone(owner_client, stranger):
    eval_set = make_set(owner_client)
    run = finished(start(owner_client, eval_set, string_check="on", operation="eq"))
    other = Client()
    other.force_login(stranger)
    assert other.get(reverse("evals-run", args=[run.pk])).status_code == 404
    assert other.post(reverse("evals-run-cancel", args=[run.pk])).status_code == 404
    form = {"model": "smollm2-135m-instruct", "temperature": 0, "max_tokens": 8, "label": "on"}
    assert other.post(reverse("evals-run-create", args=[eval_set.pk]), form).status_code == 404
    assert EvalRun.objects.count() == 1


def test_comparing_two_runs_shows_the_items_that_flipped(owner_client):
    eval_set = make_set(owner_client)
    a = finished(start(owner_client, eval_set, string_check="on", operation="eq"))
    # One token of answer: "Echo:" alone, which equals no ideal.
    form = {
        "model": "smollm2-135m-instruct",
        "temperature": 0,
        "max_tokens": 1,
        "string_check": "on",
        "operation": "eq",
    }
    owner_client.post(reverse("evals-run-create", args=[eval_set.pk]), form)
    b = finished(EvalRun.objects.latest("created_at"))
    picked = owner_client.get(
        reverse("evals-compare-pick", args=[eval_set.pk]), {"a": a.pk, "b": b.pk}
    )
    assert picked["Location"] == reverse("evals-compare", args=[a.pk, b.pk])
    page = owner_client.get(picked["Location"]).content.decode()
    assert 'id="comparison"' in page and "string_check (eq)" in page
    assert page.count('class="flip"') == 1 and 'data-line="1"' in page
    assert "Echo: alpha" in page  # both answers of the flipped item
