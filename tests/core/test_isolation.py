"""Every user-owned object, tried by a second account over each interface: site pages, htmx
partials, the WebSocket and the API. Each attempt is a 404 (or a refused socket) that shows none
of the owner's text and changes nothing.

The object routes are enumerated from the URL configuration itself, so a new route that takes an
object's id fails here until it is added to the sweep.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.core.files.base import ContentFile
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from apps.accounts.models import ApiKey, User
from apps.api.models import ApiFile, Batch, StoredResponse
from apps.catalog.models import LanguageModel, ModelVersion
from apps.chat.models import Conversation, Document, Message, Preset
from apps.evals.models import EvalItem, EvalRun, EvalSet
from apps.finetuning.models import Dataset, FineTuningJob
from apps.inference.models import Generation, UsageRecord
from tests.chat.conftest import communicator
from tests.factories import (
    ApiKeyFactory,
    ConversationFactory,
    GenerationFactory,
    ModelVersionFactory,
    answered_turn,
)

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "owner-secret"  # in every text the owner wrote or was answered: must never show


@pytest.fixture
def owned(owner, chat_model) -> dict[str, object]:
    """One of each object an account owns, with SECRET in its text."""
    version = chat_model.active_version
    conversation = ConversationFactory(
        owner=owner, title=f"{SECRET} title", system_prompt=f"{SECRET} system"
    )
    generation = answered_turn(
        conversation, f"{SECRET} question", f"{SECRET} answer", status="running"
    ).generation
    key = ApiKeyFactory(
        user=owner,
        name=f"{SECRET} key",
        scopes=[ApiKey.Scope.INFERENCE, ApiKey.Scope.FINE_TUNING],
    )
    dataset = Dataset.objects.create(
        owner=owner, filename=f"{SECRET}.jsonl", format="chat", bytes=10, rows=2, tokens=20
    )
    dataset.file.save("upload.jsonl", ContentFile(b"{}\n{}\n"))
    model = LanguageModel.objects.create(
        slug="ft:smollm2-135m-instruct:owner:0000abcd",
        display_name=f"{SECRET} model",
        visibility=LanguageModel.Visibility.PRIVATE,
        owner=owner,
    )
    tuned = ModelVersionFactory(
        model=model, source_kind=ModelVersion.Source.ADAPTER, base_version=version, is_active=True
    )
    job = FineTuningJob.objects.create(
        owner=owner,
        base_version=version,
        training_file=dataset,
        hyperparameters={},
        suffix="owner",
        status="succeeded",
        result_version=tuned,
        finished_at=timezone.now(),
    )
    binned = ConversationFactory(owner=owner, title=f"{SECRET} deleted", deleted_at=timezone.now())
    preset = Preset.objects.create(owner=owner, name=f"{SECRET} preset", system_prompt=SECRET)
    document = Document(
        owner=owner,
        message=conversation.messages.filter(role="user").first(),
        name=f"{SECRET}.md",
        kind="Markdown",
        bytes=len(SECRET),
        text=SECRET,
        tokens=3,
    )
    document.file.save("notes.md", ContentFile(SECRET.encode()), save=False)
    document.save()
    eval_set = EvalSet.objects.create(owner=owner, name=f"{SECRET} eval set")
    EvalItem.objects.create(eval_set=eval_set, line=1, input=f"{SECRET} item", ideal=[SECRET])
    eval_run = EvalRun.objects.create(
        owner=owner,
        eval_set=eval_set,
        model_version=version,
        params={"temperature": 0.0},
        graders=[{"type": "string_check", "operation": "eq"}],
        status="running",
        total=1,
    )
    UsageRecord.objects.create(
        user=owner, model=chat_model, source="chat", kind="chat", prompt_tokens=4321
    )
    answer = GenerationFactory(
        user=owner,
        model_version=version,
        messages=[{"role": "user", "content": f"{SECRET} asked"}],
        output=f"{SECRET} replied",
        status="running",
    )
    response = StoredResponse.objects.create(
        user=owner,
        generation=answer,
        model=chat_model.slug,
        context=[{"role": "user", "content": f"{SECRET} asked"}],
        input_items=[{"type": "message", "role": "user", "content": f"{SECRET} asked"}],
        request={"background": True},  # so that cancel is a write the owner could make
    )
    batch_input = ApiFile.objects.create(
        owner=owner,
        purpose=ApiFile.Purpose.BATCH,
        filename=f"{SECRET}.jsonl",
        content=f'{{"custom_id": "{SECRET}"}}\n',
        bytes=40,
    )
    batch = Batch.objects.create(
        user=owner,
        endpoint="/v1/chat/completions",
        input_file=batch_input,
        metadata={"note": SECRET},
        expires_at=timezone.now() + timedelta(hours=24),
        status="running",
        total=1,
    )
    return {
        "conversation": conversation,
        "binned": binned,
        "preset": preset,
        "document": document,
        "eval_set": eval_set,
        "eval_run": eval_run,
        "generation": generation,
        "key": key,
        "dataset": dataset,
        "model": model,
        "job": job,
        "response": response,
        "batch_input": batch_input,
        "batch": batch,
    }


def owner_state(owner) -> list[object]:
    """Everything of the owner's that an attempt could change."""
    return [
        list(Conversation.objects.filter(owner=owner).values()),
        list(Message.objects.filter(conversation__owner=owner).values()),
        list(Generation.objects.filter(user=owner).values()),
        list(ApiKey.objects.filter(user=owner).values("revoked_at", "name")),
        list(Dataset.objects.filter(owner=owner).values()),
        list(FineTuningJob.objects.filter(owner=owner).values()),
        list(LanguageModel.objects.filter(owner=owner).values("is_enabled", "visibility")),
        list(UsageRecord.objects.filter(user=owner).values()),
        list(Preset.objects.filter(owner=owner).values()),
        list(Document.objects.filter(owner=owner).values()),
        list(EvalSet.objects.filter(owner=owner).values()),
        list(EvalItem.objects.filter(eval_set__owner=owner).values()),
        list(EvalRun.objects.filter(owner=owner).values()),
        list(StoredResponse.objects.filter(user=owner).values()),
        list(ApiFile.objects.filter(owner=owner).values()),
        list(Batch.objects.filter(user=owner).values()),
    ]


def as_account(user: User) -> tuple[Client, Client]:
    """A signed-in site client and an API client with a key of every scope, both ``user``'s."""
    key = ApiKeyFactory(
        user=user, name="all scopes", scopes=[ApiKey.Scope.INFERENCE, ApiKey.Scope.FINE_TUNING]
    ).key
    site = Client()
    site.force_login(user)
    return site, Client(HTTP_AUTHORIZATION=f"Bearer {key}")


def routes_with_ids() -> set[str]:
    """Every site and API route that names an object in its path (the admin aside)."""
    found: set[str] = set()

    def walk(patterns: list[URLPattern | URLResolver], prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                if not route.startswith("admin/"):
                    walk(pattern.url_patterns, route)
            elif "<" in route:
                found.add(route)

    walk(get_resolver().url_patterns, "")
    return found


def site_attempts(o: dict[str, object]) -> dict[str, list[tuple[str, str]]]:
    conversation, dataset, job = o["conversation"], o["dataset"], o["job"]
    key, batch, batch_input = o["key"], o["batch"], o["batch_input"]
    response = f"resp_{o['response'].pk.hex}"
    return {
        "chat/<uuid:conversation_id>/": [("get", f"/chat/{conversation.pk}/")],
        "chat/<uuid:conversation_id>/rename/": [("post", f"/chat/{conversation.pk}/rename/")],
        "chat/<uuid:conversation_id>/delete/": [("post", f"/chat/{conversation.pk}/delete/")],
        "chat/<uuid:conversation_id>/settings/": [("post", f"/chat/{conversation.pk}/settings/")],
        "chat/<uuid:conversation_id>/export/": [
            ("get", f"/chat/{conversation.pk}/export/?format=json"),
            ("get", f"/chat/{conversation.pk}/export/?format=md"),
        ],
        "chat/<uuid:conversation_id>/pin/": [("post", f"/chat/{conversation.pk}/pin/")],
        "chat/<uuid:conversation_id>/restore/": [("post", f"/chat/{o['binned'].pk}/restore/")],
        "chat/<uuid:conversation_id>/presets/apply/": [
            ("post", f"/chat/{conversation.pk}/presets/apply/")
        ],
        "chat/<uuid:conversation_id>/presets/save/": [
            ("post", f"/chat/{conversation.pk}/presets/save/")
        ],
        "chat/documents/<uuid:document_id>/": [("get", f"/chat/documents/{o['document'].pk}/")],
        "evals/<uuid:eval_set_id>/": [("get", f"/evals/{o['eval_set'].pk}/")],
        "evals/<uuid:eval_set_id>/delete/": [("post", f"/evals/{o['eval_set'].pk}/delete/")],
        "evals/<uuid:eval_set_id>/runs/": [("post", f"/evals/{o['eval_set'].pk}/runs/")],
        "evals/runs/<uuid:run_id>/": [("get", f"/evals/runs/{o['eval_run'].pk}/")],
        "evals/runs/<uuid:run_id>/cancel/": [("post", f"/evals/runs/{o['eval_run'].pk}/cancel/")],
        "evals/runs/<uuid:run_id>/compare/<uuid:other_id>/": [
            ("get", f"/evals/runs/{o['eval_run'].pk}/compare/{o['eval_run'].pk}/")
        ],
        "evals/<uuid:eval_set_id>/compare/": [
            ("get", f"/evals/{o['eval_set'].pk}/compare/?a={o['eval_run'].pk}&b={o['eval_run'].pk}")
        ],
        "accounts/keys/<int:api_key_id>/revoke/": [("post", f"/accounts/keys/{key.pk}/revoke/")],
        "finetuning/datasets/<uuid:dataset_id>/": [("get", f"/finetuning/datasets/{dataset.pk}/")],
        "finetuning/datasets/<uuid:dataset_id>/delete/": [
            ("post", f"/finetuning/datasets/{dataset.pk}/delete/")
        ],
        "finetuning/jobs/<uuid:job_id>/": [("get", f"/finetuning/jobs/{job.pk}/")],
        "finetuning/jobs/<uuid:job_id>/cancel/": [("post", f"/finetuning/jobs/{job.pk}/cancel/")],
        "finetuning/jobs/<uuid:job_id>/delete-model/": [
            ("post", f"/finetuning/jobs/{job.pk}/delete-model/")
        ],
        "v1/models/<str:model_id>": [
            ("get", f"/v1/models/{o['model'].slug}"),
            ("delete", f"/v1/models/{o['model'].slug}"),
        ],
        "v1/files/<str:file_id>": [
            ("get", f"/v1/files/{dataset.openai_id}"),
            ("delete", f"/v1/files/{dataset.openai_id}"),
            ("get", f"/v1/files/{batch_input.openai_id}"),
            ("delete", f"/v1/files/{batch_input.openai_id}"),
        ],
        "v1/files/<str:file_id>/content": [
            ("get", f"/v1/files/{batch_input.openai_id}/content"),
            ("get", f"/v1/files/{dataset.openai_id}/content"),
        ],
        "batches/files/<str:file_id>/": [("get", f"/batches/files/{batch_input.openai_id}/")],
        "v1/batches/<str:batch_id>": [("get", f"/v1/batches/{batch.openai_id}")],
        "v1/batches/<str:batch_id>/cancel": [("post", f"/v1/batches/{batch.openai_id}/cancel")],
        "v1/responses/<str:response_id>": [
            ("get", f"/v1/responses/{response}"),
            ("delete", f"/v1/responses/{response}"),
        ],
        "v1/responses/<str:response_id>/input_items": [
            ("get", f"/v1/responses/{response}/input_items")
        ],
        "v1/responses/<str:response_id>/cancel": [("post", f"/v1/responses/{response}/cancel")],
        "v1/fine_tuning/jobs/<str:job_id>": [("get", f"/v1/fine_tuning/jobs/{job.openai_id}")],
        "v1/fine_tuning/jobs/<str:job_id>/events": [
            ("get", f"/v1/fine_tuning/jobs/{job.openai_id}/events")
        ],
        "v1/fine_tuning/jobs/<str:job_id>/cancel": [
            ("post", f"/v1/fine_tuning/jobs/{job.openai_id}/cancel")
        ],
    }


# Routes with a parameter that names no user's object.
NOT_OWNED = {"finetuning/demo/<str:name>"}  # the shipped demo files, the same for everyone


def test_every_object_route_is_404_for_another_account_and_changes_nothing(owner, stranger, owned):
    attempts = site_attempts(owned)
    assert routes_with_ids() - NOT_OWNED == set(attempts), "a route is missing from the sweep"
    site, api = as_account(stranger)
    owner_site, owner_api = as_account(owner)
    before = owner_state(owner)
    for route, tries in attempts.items():
        for method, path in tries:
            client = api if path.startswith("/v1/") else site
            for headers in ({}, {"HX-Request": "true"}):  # as a page, and as an htmx partial
                response = getattr(client, method)(path, headers=headers)
                assert response.status_code == 404, (route, method, headers, response.status_code)
                assert SECRET not in response.content.decode(errors="replace"), (route, method)
        # The attempt was refused for being someone else's, not for being malformed: the owner
        # reads each of them (the writes are not tried: they would change the owner's rows).
        method, path = tries[0]
        if method == "get":
            reader = owner_api if path.startswith("/v1/") else owner_site
            assert reader.get(path, follow=True).status_code == 200, route
    assert owner_state(owner) == before


def test_lists_and_model_choices_show_nothing_of_another_account(owner, stranger, owned):
    site, api = as_account(stranger)
    pages = (
        "/chat/",
        "/accounts/keys/",
        "/accounts/usage/",
        "/finetuning/",
        "/chat/compare/",
        "/evals/",
    )
    for page in (*pages, "/batches/"):
        response = site.get(page)
        assert response.status_code == 200, page
        text = response.content.decode()
        assert SECRET not in text and owned["model"].slug not in text, page
        assert "4321" not in text, page  # the owner's token count
    for path in ("/v1/models", "/v1/files", "/v1/fine_tuning/jobs", "/v1/batches"):
        body = api.get(path).json()
        assert SECRET not in str(body) and owned["model"].slug not in str(body), path
    before = owner_state(owner)

    # The owner's private model cannot be used by name, anywhere a model is chosen.
    private = owned["model"].slug
    ask = {"model": private, "messages": [{"role": "user", "content": "hi"}]}
    response = api.post("/v1/chat/completions", ask, content_type="application/json")
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    response = api.post(
        "/v1/completions", {"model": private, "prompt": "hi"}, content_type="application/json"
    )
    assert response.status_code == 404
    mine = ConversationFactory(owner=stranger)
    settings_form = {"model": private, "temperature": 0, "top_p": 1, "max_tokens": 8}
    response = site.post(f"/chat/{mine.pk}/settings/", settings_form, headers={"HX-Request": "1"})
    assert response.status_code == 400
    mine.refresh_from_db()
    assert mine.model.slug != private
    apply = site.post(f"/chat/{mine.pk}/presets/apply/", {"preset": owned["preset"].pk})
    assert apply.status_code == 404
    mine.refresh_from_db()
    assert SECRET not in mine.system_prompt
    compare = {"a": private, "b": private, "text": "hi", "temperature": 0, "max_tokens": 8}
    assert site.post("/chat/compare/", compare).status_code == 400
    assert not Generation.objects.filter(user=stranger).exists()
    assert owner_state(owner) == before


async def test_sockets_of_another_account_are_refused(owner, stranger, owned):
    paths = [
        f"/ws/chat/{owned['conversation'].pk}/",
        f"/ws/generations/{owned['generation'].pk}/",
        f"/ws/finetuning/jobs/{owned['job'].pk}/",
    ]
    for path in paths:
        ws = await communicator(stranger, path=path)
        connected, _ = await ws.connect()
        assert connected is False, path
        # An id that exists nowhere is refused the same way: nothing tells the two apart.
        missing = path.replace(path.rstrip("/").rsplit("/", 1)[1], str(uuid.uuid4()))
        ws = await communicator(stranger, path=missing)
        assert (await ws.connect())[0] is False, missing
    for path in paths:  # and the owner gets in (the refusals were about the account)
        ws = await communicator(owner, path=path)
        connected, _ = await ws.connect()
        assert connected is True, path
        await ws.disconnect()
    before = await database_sync_to_async(owner_state)(owner)
    assert before[2][0]["status"] == "running"  # the socket attempts stopped nothing
