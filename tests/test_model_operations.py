"""Model operations end to end (issue 5): registering, restricting, versioning and retiring a
model, worker heartbeats, load and unload from the admin, eviction, /readyz and /metrics.

Production shape: `manage.py serve` and a `celery worker` process on Postgres and Redis. The
worker serves two tiny Llamas the tests save under the models root, within a memory budget that
fits one of them, and warms nothing at start.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from django.contrib.auth.models import Group
from django.utils import timezone
from django.utils.html import escape

from apps.audit.models import AuditEntry
from apps.catalog.models import LanguageModel, ModelVersion
from apps.core.models import Worker
from apps.inference.models import Generation
from tests.conftest import celery_worker
from tests.factories import ApiKeyFactory, ModelVersionFactory, UserFactory
from tests.helpers import Process, wait_for

pytestmark = [pytest.mark.model, pytest.mark.django_db(transaction=True)]

WORKER = "ops-inference@tests"
HELLO = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def ops_worker(django_db_setup, tmp_path_factory) -> Iterator[Process]:
    worker = celery_worker(
        "inference",
        tmp_path_factory.mktemp("ops-worker"),
        name=WORKER,
        INFERENCE_WARM_MODELS="",
        INFERENCE_MEMORY_MB="20",  # one tiny model takes about 13 MB
    )
    try:
        yield worker
    finally:
        worker.stop()


def loaded_on_worker() -> list[str]:
    worker = Worker.objects.filter(hostname=WORKER).first()
    return [m["key"] for m in worker.loaded if m["state"] == "ready"] if worker else []


@pytest.fixture
def research(teammate) -> Group:
    group = Group.objects.create(name="research")
    teammate.groups.add(group)
    return group


@pytest.fixture
def tiny_chat(
    owner, research, tiny_model_dir: Path, other_tiny_model_dir: Path, settings
) -> LanguageModel:
    """A model for the owner and the research group only, with two versions (different weights);
    v1 active. Sources are relative to the models root, as an admin would type them."""
    root = Path(settings.MODELS_ROOT)
    model = LanguageModel.objects.create(
        slug="tiny-chat",
        display_name="Tiny chat",
        task=LanguageModel.Task.CHAT,
        visibility=LanguageModel.Visibility.LISTED,
    )
    model.allowed_users.add(owner)
    model.allowed_groups.add(research)
    for label, folder, active in (
        ("v1", tiny_model_dir, True),
        ("v2", other_tiny_model_dir, False),
    ):
        ModelVersion.objects.create(
            model=model,
            label=label,
            source_kind=ModelVersion.Source.LOCAL,
            source=str(folder.relative_to(root)),
            context_length=256,
            is_active=active,
            default_params={"temperature": 0, "max_tokens": 12},
        )
    return model


def key_for(user) -> str:
    return ApiKeyFactory(user=user).key  # type: ignore[no-any-return]


def chat(url: str, key: str, model: str = "tiny-chat") -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": HELLO},
        timeout=120,
    )


def model_ids(url: str, key: str) -> list[str]:
    response = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return sorted(m["id"] for m in response.json()["data"])


def test_readyz_is_503_without_a_live_worker_and_200_with_one(live_server_url, request):
    assert httpx.get(f"{live_server_url}/healthz").json() == {"status": "ok"}
    # A worker that stopped beating long ago does not count.
    Worker.objects.create(
        hostname="gone@elsewhere",
        host="elsewhere",
        pid=1,
        queues=["inference"],
        device="CPU, 2 cores",
        started_at=timezone.now() - timedelta(hours=2),
        last_seen=timezone.now() - timedelta(hours=1),  # lost, not yet old enough to be pruned
    )
    response = httpx.get(f"{live_server_url}/readyz")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    body = response.json()
    assert body["checks"]["database"] == "ok" and body["checks"]["broker"] == "ok"
    assert body["checks"]["inference_workers"].startswith("no live inference worker")
    assert "inference_workers: no live inference worker" in body["reason"]

    request.getfixturevalue("ops_worker")
    ready = wait_for(
        lambda: (r := httpx.get(f"{live_server_url}/readyz")).status_code == 200 and r,
        what="/readyz to turn 200",
    )
    assert ready.json()["status"] == "ready"  # type: ignore[union-attr]
    worker = Worker.objects.get(hostname=WORKER)
    assert worker.state == "live" and worker.queues == ["inference"]
    assert worker.device.startswith("CPU") and worker.memory_bytes > 0
    assert worker.memory_budget_bytes == 20 << 20
    assert Worker.objects.get(hostname="gone@elsewhere").state == "lost"


@pytest.mark.usefixtures("ops_worker")
def test_a_listed_model_reaches_its_users_only_and_answers_through_the_worker(
    live_server_url, tiny_chat, owner, teammate, stranger, client
):
    chat_model = "smollm2-135m-instruct"
    from apps.catalog.packaged import register_packaged_models

    register_packaged_models(LanguageModel, ModelVersion)
    staff = UserFactory(username="staffer", is_staff=True)
    assert "tiny-chat" in model_ids(live_server_url, key_for(owner))  # listed by name
    assert "tiny-chat" in model_ids(live_server_url, key_for(teammate))  # through the group
    assert "tiny-chat" not in model_ids(live_server_url, key_for(stranger))
    assert "tiny-chat" not in model_ids(live_server_url, key_for(staff))  # staff are not listed
    assert chat_model in model_ids(live_server_url, key_for(stranger))

    # The chat picker follows the same rule.
    for user, sees in ((owner, True), (teammate, True), (stranger, False)):
        client.force_login(user)
        page = client.post("/chat/new/", follow=True).content.decode()
        assert ('value="tiny-chat"' in page) is sees, user
    stranger_answer = chat(live_server_url, key_for(stranger))
    assert stranger_answer.status_code == 404

    response = chat(live_server_url, key_for(teammate))
    assert response.status_code == 200, response.text
    generation = Generation.objects.get(user=teammate)
    assert generation.model_version.label == "v1"
    # The version's defaults applied where the request was silent.
    assert generation.params["temperature"] == 0 and generation.params["max_tokens"] == 12
    assert response.json()["choices"][0]["message"]["content"] == generation.output
    assert ModelVersion.objects.get(model=tiny_chat, label="v1").load_status == "ready"


@pytest.mark.usefixtures("ops_worker")
def test_rolling_back_changes_the_version_that_answers_and_the_budget_keeps_one_loaded(
    live_server_url, tiny_chat, owner, admin_client
):
    key = key_for(owner)
    first = chat(live_server_url, key).json()["choices"][0]["message"]["content"]
    v1, v2 = (ModelVersion.objects.get(model=tiny_chat, label=x) for x in ("v1", "v2"))

    def activate(version: ModelVersion) -> None:
        response = admin_client.post(
            "/admin/catalog/modelversion/",
            {"action": "activate", "_selected_action": [version.pk]},
        )
        assert response.status_code == 302

    activate(v2)
    second = chat(live_server_url, key).json()["choices"][0]["message"]["content"]
    assert second != first
    assert Generation.objects.filter(user=owner).latest("created_at").model_version == v2
    # 20 MB fits one tiny model: loading v2 unloaded v1.
    wait_for(lambda: loaded_on_worker() == ["tiny-chat@v2"], what="v1 to be evicted")

    activate(v1)  # roll back
    third = chat(live_server_url, key).json()["choices"][0]["message"]["content"]
    assert third == first
    wait_for(lambda: loaded_on_worker() == ["tiny-chat@v1"], what="v2 to be evicted")
    activations = AuditEntry.objects.filter(action="activate", target_type="catalog.modelversion")
    assert [e.changes["active version"] for e in activations.order_by("at")] == [
        ["v1", "v2"],
        ["v2", "v1"],
    ]


@pytest.mark.usefixtures("ops_worker")
def test_disabling_a_model_removes_it_at_once(live_server_url, tiny_chat, owner, admin_client):
    key = key_for(owner)
    assert "tiny-chat" in model_ids(live_server_url, key)
    admin_client.post(
        "/admin/catalog/languagemodel/",
        {"action": "disable", "_selected_action": [tiny_chat.pk]},
    )
    assert "tiny-chat" not in model_ids(live_server_url, key)
    assert chat(live_server_url, key).status_code == 404
    entry = AuditEntry.objects.get(target_type="catalog.languagemodel", action="update")
    assert entry.changes == {"is_enabled": [True, False]} and entry.actor_name == "admin"


@pytest.mark.usefixtures("ops_worker")
def test_a_version_that_cannot_load_is_marked_failed_and_the_worker_serves_on(
    live_server_url, tiny_chat, owner, tmp_path, settings
):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickles are refused")
    broken = ModelVersionFactory(model=tiny_chat, label="broken", source=str(tmp_path))
    ModelVersion.objects.filter(model=tiny_chat).update(is_active=False)
    ModelVersion.objects.filter(pk=broken.pk).update(is_active=True)
    key = key_for(owner)

    response = chat(live_server_url, key)
    assert response.status_code == 503
    assert "no .safetensors weights" in response.json()["error"]["message"]
    broken.refresh_from_db()
    assert broken.load_status == "failed" and "no .safetensors weights" in broken.load_error

    # The worker is still there and serves the good version.
    ModelVersion.objects.filter(pk=broken.pk).update(is_active=False)
    ModelVersion.objects.filter(model=tiny_chat, label="v1").update(is_active=True)
    assert chat(live_server_url, key).status_code == 200
    assert Worker.objects.get(hostname=WORKER).state == "live"


@pytest.mark.usefixtures("ops_worker")
def test_metrics_count_tokens_after_a_chat(live_server_url, tiny_chat, owner, settings):
    assert httpx.get(f"{live_server_url}/metrics").status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.get(f"{live_server_url}/metrics", headers=wrong).status_code == 401
    auth = {"Authorization": f"Bearer {settings.METRICS_TOKEN}"}

    def tokens() -> float:
        text = httpx.get(f"{live_server_url}/metrics", headers=auth).text
        found = re.search(rf'playground_tokens_generated_total{{worker="{WORKER}"}} (\S+)', text)
        return float(found.group(1)) if found else 0.0

    before = tokens()
    assert chat(live_server_url, key_for(owner)).status_code == 200
    generation = Generation.objects.get(user=owner)
    assert generation.completion_tokens > 0
    wait_for(lambda: tokens() >= before + generation.completion_tokens, what="tokens counted")

    text = httpx.get(f"{live_server_url}/metrics", headers=auth).text
    assert re.search(
        rf'playground_time_to_first_token_seconds_count{{worker="{WORKER}"}} [1-9]', text
    )
    assert f'playground_worker_up{{worker="{WORKER}"}} 1.0' in text
    assert 'playground_queue_depth{queue="inference"} 0.0' in text
    assert 'playground_finetune_jobs{state="running"} 0.0' in text
    assert re.search(
        r'playground_http_requests_total{endpoint="api-chat-completions",method="POST",'
        r'status="200"} [1-9]',
        text,
    )


@pytest.mark.usefixtures("ops_worker")
def test_admin_loads_unloads_and_tests_a_version(tiny_chat, admin_client):
    v2 = ModelVersion.objects.get(model=tiny_chat, label="v2")
    wait_for(lambda: Worker.objects.filter(hostname=WORKER).exists(), what="a heartbeat")
    response = admin_client.post(
        "/admin/catalog/modelversion/",
        {"action": "load_on_workers", "_selected_action": [v2.pk]},
        follow=True,
    )
    assert f"{WORKER} loading" in response.content.decode()
    wait_for(lambda: "tiny-chat@v2" in loaded_on_worker(), what="v2 loaded")
    page = admin_client.get("/admin/core/worker/").content.decode()
    assert WORKER in page and "tiny-chat@v2 on transformers (ready" in page and ">live<" in page

    admin_client.post(
        "/admin/catalog/modelversion/",
        {"action": "unload_from_workers", "_selected_action": [v2.pk]},
    )
    wait_for(lambda: "tiny-chat@v2" not in loaded_on_worker(), what="v2 unloaded")
    assert [e.action for e in AuditEntry.objects.filter(target_id=str(v2.pk)).order_by("at")] == [
        "load",
        "unload",
    ]

    # A test prompt to the inactive version, answered by the worker, with its timing.
    url = f"/admin/catalog/modelversion/{v2.pk}/test/"
    sent = admin_client.post(url, {"prompt": "Hello there"})
    assert sent.status_code == 302
    generation = Generation.objects.get(model_version=v2)
    wait_for(lambda: Generation.objects.get(pk=generation.pk).is_finished, what="the answer")
    generation.refresh_from_db()
    assert generation.status == "succeeded", generation.error_message
    page = admin_client.get(sent["Location"]).content.decode()
    assert "Time to first token" in page and f"{generation.ttft_ms} ms" in page
    assert escape(generation.output) in page
