"""Jobs, datasets and fine-tuned models belong to their owner: over the site, the WebSocket and
the API another account gets 404 and changes nothing. Also: cancelling a queued job, the reaper,
and refusals of the API that write nothing."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from apps.accounts.models import ApiKey
from apps.catalog.models import LanguageModel, ModelVersion
from apps.catalog.selectors import chat_models_for
from apps.finetuning.models import Dataset, FineTuningJob, JobEvent
from apps.inference.models import Generation
from tests.chat.conftest import communicator
from tests.factories import ApiKeyFactory, GenerationFactory, ModelVersionFactory

from .conftest import GOOD

pytestmark = pytest.mark.django_db(transaction=True)


def api_client(user, scopes=(ApiKey.Scope.FINE_TUNING,)) -> Client:
    key = ApiKeyFactory(user=user, scopes=list(scopes)).key
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


@pytest.fixture
def private_model(owner, chat_model) -> LanguageModel:
    return ModelVersionFactory(
        model__slug="ft:smollm2-135m-instruct:mine:0000abcd",
        model__display_name="mine",
        model__visibility=LanguageModel.Visibility.PRIVATE,
        model__owner=owner,
        source_kind=ModelVersion.Source.ADAPTER,
        base_version=chat_model.active_version,
        is_active=True,
    ).model


def test_pages_are_the_owners_alone(client, owner, stranger, job, dataset):
    client.force_login(owner)
    assert client.get(f"/finetuning/jobs/{job.pk}/").status_code == 200
    assert client.get(f"/finetuning/datasets/{dataset.pk}/").status_code == 200
    client.force_login(stranger)
    assert client.get(f"/finetuning/jobs/{job.pk}/").status_code == 404
    assert client.get(f"/finetuning/datasets/{dataset.pk}/").status_code == 404
    assert client.post(f"/finetuning/jobs/{job.pk}/cancel/").status_code == 404
    job.refresh_from_db()
    assert (job.status, job.cancel_requested) == ("queued", False)
    assert str(job.pk) not in client.get("/finetuning/").content.decode()


def test_cancelling_a_queued_job_ends_it_at_once(client, owner, job):
    client.force_login(owner)
    assert client.post(f"/finetuning/jobs/{job.pk}/cancel/").status_code == 302
    job.refresh_from_db()
    assert job.status == "cancelled" and job.finished_at is not None
    assert job.events.last().message == "Cancelled before it started"


def test_api_isolation_and_scopes(owner, stranger, job, dataset):
    mine, theirs = api_client(owner), api_client(stranger)
    assert mine.get(f"/v1/fine_tuning/jobs/{job.openai_id}").json()["status"] == "queued"
    assert mine.get(f"/v1/files/{dataset.openai_id}").json()["rows"] == 6
    for path in (
        f"/v1/fine_tuning/jobs/{job.openai_id}",
        f"/v1/fine_tuning/jobs/{job.openai_id}/events",
        f"/v1/files/{dataset.openai_id}",
    ):
        assert theirs.get(path).status_code == 404
    assert theirs.post(f"/v1/fine_tuning/jobs/{job.openai_id}/cancel").status_code == 404
    assert theirs.get("/v1/fine_tuning/jobs").json()["data"] == []
    assert theirs.get("/v1/files").json()["data"] == []
    response = theirs.post(
        "/v1/fine_tuning/jobs",
        {"model": "smollm2-135m-instruct", "training_file": dataset.openai_id},
        content_type="application/json",
    )
    assert response.status_code == 404 and response.json()["error"]["param"] == "training_file"
    assert FineTuningJob.objects.count() == 1
    inference_only = api_client(owner, scopes=[ApiKey.Scope.INFERENCE])
    assert inference_only.get("/v1/fine_tuning/jobs").status_code == 403


def test_api_refuses_bad_files_and_jobs_and_writes_nothing(owner, dataset, chat_model):
    api = api_client(owner)
    bad = SimpleUploadedFile("bad.jsonl", b'{"messages": []}\nnot json\n')
    response = api.post("/v1/files", {"purpose": "fine-tune", "file": bad})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_file"
    assert error["details"] == [
        {"line": 1, "message": '"messages" must be a non-empty list'},
        {"line": 2, "message": "not valid JSON (Expecting value at column 1)"},
    ]
    wrong_purpose = api.post(
        "/v1/files", {"purpose": "assistants", "file": SimpleUploadedFile("a.jsonl", GOOD)}
    )
    assert wrong_purpose.status_code == 400
    assert Dataset.objects.count() == 1

    def create(**body):
        body = {"model": chat_model.slug, "training_file": dataset.openai_id, **body}
        return api.post("/v1/fine_tuning/jobs", json.dumps(body), content_type="application/json")

    cases = [
        (create(hyperparameters={"n_epochs": 0}), 400, "hyperparameters.n_epochs"),
        (create(hyperparameters={"warp": 9}), 400, "hyperparameters.warp"),
        (create(method={"type": "dpo"}), 400, "method"),
        (create(model="no-such-model"), 404, "model"),
        (create(suffix="a b"), 400, "suffix"),
        (
            create(hyperparameters={"lora_rank": 2, "lora_alpha": 64}),
            400,
            "hyperparameters.lora_alpha",
        ),
        (create(validation_file=dataset.openai_id), 400, "validation_file"),
    ]
    for response, status, param in cases:
        assert response.status_code == status, response.json()
        assert response.json()["error"]["param"] == param
    assert not FineTuningJob.objects.exists()
    good = create(hyperparameters={"n_epochs": 2}, suffix="ok", seed=7)
    assert good.status_code == 200
    body = good.json()
    assert (body["status"], body["hyperparameters"]["n_epochs"], body["seed"]) == ("queued", 2, 7)


async def test_job_socket_sends_the_backlog_to_its_owner_only(owner, stranger, job):
    ws = await communicator(stranger, path=f"/ws/finetuning/jobs/{job.pk}/")
    connected, code = await ws.connect()
    assert not connected and code == 4404
    ws = await communicator(owner, path=f"/ws/finetuning/jobs/{job.pk}/?after=0")
    connected, _ = await ws.connect()
    assert connected
    first = await ws.receive_json_from(timeout=5)
    assert first["type"] == "job.event" and first["event"]["message"].startswith("Queued")
    assert first["job"]["status"] == "queued"
    await ws.disconnect()


def test_a_private_model_is_its_owners_alone(client, owner, stranger, private_model):
    assert private_model in chat_models_for(owner)
    assert private_model not in chat_models_for(stranger)
    assert private_model.slug in [
        m["id"] for m in api_client(owner).get("/v1/models").json()["data"]
    ]
    assert private_model.slug not in [
        m["id"] for m in api_client(stranger).get("/v1/models").json()["data"]
    ]
    client.force_login(stranger)
    response = client.post(
        "/chat/compare/",
        {
            "a": "smollm2-135m-instruct",
            "b": private_model.slug,
            "text": "hi",
            "temperature": 0,
            "max_tokens": 8,
        },
    )
    assert response.status_code == 400
    assert not Generation.objects.exists()


async def test_generation_socket_is_the_starters_alone(owner, stranger, chat_model):
    from channels.db import database_sync_to_async

    generation = await database_sync_to_async(GenerationFactory)(
        user=owner, output="Hello", status=Generation.Status.SUCCEEDED
    )
    ws = await communicator(stranger, path=f"/ws/generations/{generation.pk}/")
    connected, code = await ws.connect()
    assert not connected and code == 4404
    ws = await communicator(owner, path=f"/ws/generations/{generation.pk}/")
    assert (await ws.connect())[0]
    assert await ws.receive_json_from(timeout=5) == {
        "type": "delta",
        "generation": str(generation.pk),
        "offset": 0,
        "text": "Hello",
    }
    done = await ws.receive_json_from(timeout=5)
    assert done["type"] == "done" and done["status"] == "succeeded"
    await ws.disconnect()


def test_the_chart_gets_thinned_steps_and_every_evaluation(job, monkeypatch):
    from apps.finetuning import views

    events = [
        JobEvent.objects.create(job=job, kind="step", message=str(i), data={"step": i})
        for i in range(1, 10)
    ]
    events.insert(5, JobEvent.objects.create(job=job, kind="eval", message="e", data={}))
    monkeypatch.setattr(views, "CHART_POINTS", 3)
    assert [e.message for e in views._thinned(events)] == ["1", "4", "e", "7", "9"]


def test_compare_page_offers_the_users_models(client, owner, private_model):
    client.force_login(owner)
    page = client.get(f"/chat/compare/?a=smollm2-135m-instruct&b={private_model.slug}")
    body = page.content.decode()
    assert page.status_code == 200
    assert f'<option value="{private_model.slug}" selected>' in body


def test_admin_lists_jobs_and_datasets_without_their_content(client, job, dataset, stranger):
    stranger.is_staff = stranger.is_superuser = True
    stranger.save()
    client.force_login(stranger)
    for path in (
        "/admin/finetuning/finetuningjob/",
        f"/admin/finetuning/finetuningjob/{job.pk}/change/",
        "/admin/finetuning/dataset/",
        f"/admin/finetuning/dataset/{dataset.pk}/change/",
    ):
        response = client.get(path)
        assert response.status_code == 200, path
        assert "Answer 3." not in response.content.decode()
    assert (
        "Queued: waiting for a training worker"
        in client.get(f"/admin/finetuning/finetuningjob/{job.pk}/change/").content.decode()
    )


def test_deleting_files_and_models(client, owner, stranger, job, private_model, settings):
    from apps.finetuning.services import dataset_create

    mine, theirs = api_client(owner), api_client(stranger)
    used = mine.delete(f"/v1/files/{job.training_file.openai_id}")
    assert used.status_code == 409 and job.openai_id in used.json()["error"]["message"]
    spare = dataset_create(owner=owner, filename="spare.jsonl", data=GOOD)
    path = settings.MEDIA_ROOT / spare.file.name
    assert path.exists()
    assert theirs.delete(f"/v1/files/{spare.openai_id}").status_code == 404
    assert mine.delete(f"/v1/files/{spare.openai_id}").json() == {
        "id": spare.openai_id,
        "object": "file",
        "deleted": True,
    }
    assert not Dataset.objects.filter(pk=spare.pk).exists() and not path.exists()

    trained = settings.FINETUNE_OUTPUT_DIR / "trained-weights"
    trained.mkdir(parents=True)
    private_model.versions.update(source=str(trained))
    slug = private_model.slug
    assert theirs.delete(f"/v1/models/{slug}").status_code == 404
    assert mine.delete("/v1/models/smollm2-135m-instruct").status_code == 404
    assert mine.delete(f"/v1/models/{slug}").json()["deleted"] is True
    assert slug not in [m["id"] for m in mine.get("/v1/models").json()["data"]]
    assert not trained.exists()
    assert private_model not in chat_models_for(owner)

    client.force_login(owner)
    other = dataset_create(owner=owner, filename="other.jsonl", data=GOOD)
    assert client.post(f"/finetuning/datasets/{other.pk}/delete/").status_code == 302
    assert not Dataset.objects.filter(pk=other.pk).exists()
    refused = client.post(f"/finetuning/datasets/{job.training_file.pk}/delete/")
    assert (
        refused.status_code == 409 and "is used by the fine-tuning job" in refused.content.decode()
    )


def test_the_base_model_decides_the_kind_of_job(owner, dataset, chat_model):
    from apps.finetuning.services import dataset_create

    api = api_client(owner)
    labelled = dataset_create(
        owner=owner, filename="l.csv", data=b"text,label\nhi,a\nho,b\nhey,a\nyo,b\n"
    )

    def create(**body):
        return api.post("/v1/fine_tuning/jobs", json.dumps(body), content_type="application/json")

    cases = [
        (create(model=chat_model.slug, training_file=labelled.openai_id), "training_file"),
        (create(model="all-minilm-l6-v2", training_file=dataset.openai_id), "training_file"),
        (
            create(model="all-minilm-l6-v2", training_file=labelled.openai_id, method="lora"),
            "method",
        ),
    ]
    for response, param in cases:
        assert response.status_code == 400, response.json()
        assert response.json()["error"]["param"] == param
    assert not FineTuningJob.objects.exists()
    made = create(model="all-minilm-l6-v2", training_file=labelled.openai_id, method="head")
    assert made.status_code == 200 and made.json()["method"] == {"type": "head"}
    assert FineTuningJob.objects.get().kind == "classification"


def test_classify_tab_lists_only_the_users_classifiers(client, owner, stranger, chat_model):
    model = LanguageModel.objects.create(
        slug="ft:all-minilm-l6-v2:mine:0000abcd",
        display_name="mine",
        task=LanguageModel.Task.CLASSIFICATION,
        visibility=LanguageModel.Visibility.PRIVATE,
        owner=owner,
    )
    ModelVersionFactory(model=model, is_active=True)
    client.force_login(owner)
    assert model.slug in client.get("/chat/classify/").content.decode()
    client.force_login(stranger)
    page = client.get("/chat/classify/").content.decode()
    assert model.slug not in page and "You have no classifiers yet" in page
    refused = api_client(stranger, scopes=[ApiKey.Scope.INFERENCE]).post(
        "/v1/classifications",
        json.dumps({"model": model.slug, "input": "hi"}),
        content_type="application/json",
    )
    assert refused.status_code == 404
    wrong_task = api_client(owner, scopes=[ApiKey.Scope.INFERENCE]).post(
        "/v1/classifications",
        json.dumps({"model": chat_model.slug, "input": "hi"}),
        content_type="application/json",
    )
    assert (
        wrong_task.status_code == 400
        and "not classification" in wrong_task.json()["error"]["message"]
    )
