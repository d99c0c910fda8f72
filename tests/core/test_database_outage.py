"""The database going away and coming back: requests meanwhile get 503 with Retry-After, and the
web process and a worker recover on their own. The outage is a TCP proxy in front of the real
Postgres that drops every connection and refuses new ones, as a restarting server does."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from django.conf import settings

from apps.accounts.models import ApiKey
from apps.accounts.services import api_key_issue
from apps.inference.models import Generation
from tests.conftest import celery_worker, child_database_url
from tests.helpers import ROOT, Process, TcpProxy, child_env, free_port, wait_for

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy(int(settings.DATABASES["default"]["PORT"]))
    yield proxy
    proxy.close()


@pytest.fixture
def server(proxy, tmp_path) -> Iterator[str]:
    port = free_port()
    process = Process(
        [str(ROOT / ".venv/bin/python"), "manage.py", "serve", "--port", str(port)],
        env=child_env(DATABASE_URL=child_database_url(proxy.port), REDIS_URL=settings.REDIS_URL),
        log=tmp_path / "server.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_for_http(f"{url}/healthz", timeout=60)
        yield url
    finally:
        process.stop()


def test_requests_during_an_outage_get_503_and_everything_recovers(
    proxy, server, owner, chat_model, tmp_path
):
    worker = celery_worker(
        "inference",
        tmp_path,
        name="outage@tests",
        DATABASE_URL=child_database_url(proxy.port),
        INFERENCE_ENGINE="fake",
    )
    key = api_key_issue(user=owner, name="outage", scopes=[ApiKey.Scope.INFERENCE])[1]
    api = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    ask = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "ping"}]}
    try:
        assert api.post("/v1/chat/completions", json=ask).status_code == 200

        proxy.cut()
        for path in ("/v1/models", "/v1/chat/completions"):
            response = api.request("GET" if path == "/v1/models" else "POST", path, json=ask)
            assert response.status_code == 503, (path, response.text)
            assert response.headers["Retry-After"] == "5"
            assert response.json()["error"]["code"] == "database_unavailable"
        page = httpx.get(f"{server}/chat/", cookies={"sessionid": "whatever"})
        assert page.status_code == 503 and "try again" in page.text
        assert page.headers["Retry-After"] == "5"
        ready = httpx.get(f"{server}/readyz")
        assert ready.status_code == 503 and "database" in ready.json()["reason"]
        assert httpx.get(f"{server}/healthz").status_code == 200  # the process itself is fine
        # The worker's heartbeat fails meanwhile, and must not die of it.
        wait_for(lambda: "heartbeat of" in worker.output(), what="a failed heartbeat")

        proxy.restore()
        response = api.post("/v1/chat/completions", json=ask)
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "Echo: ping"
        assert Generation.objects.filter(user=owner, status="succeeded").count() == 2
        assert httpx.get(f"{server}/readyz").status_code == 200
    finally:
        api.close()
        worker.stop()
