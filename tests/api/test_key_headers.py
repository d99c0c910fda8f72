"""API keys under attack: other header spellings cannot stand in for the Authorization header or
widen a key's scopes, a spoofed client address cannot dodge a key's rate limit, and the key
itself is never stored."""

from __future__ import annotations

import base64

import pytest
from django.forms.models import model_to_dict

from apps.accounts import keys as key_module
from apps.accounts.models import ApiKey
from tests.factories import ApiKeyFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def read_only_key(owner) -> str:
    return ApiKeyFactory(user=owner, scopes=[ApiKey.Scope.READ_ONLY]).key  # type: ignore[no-any-return]


CHAT = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.mark.parametrize(
    "header",
    ["HTTP_X_API_KEY", "HTTP_API_KEY", "HTTP_X_AUTHORIZATION", "HTTP_PROXY_AUTHORIZATION"],
)
def test_other_headers_do_not_authenticate(client, chat_model, api_key, header):
    response = client.get("/v1/models", **{header: f"Bearer {api_key}"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"


def test_a_second_key_in_another_header_does_not_widen_the_scopes(
    client, chat_model, api_key, read_only_key
):
    response = client.post(
        "/v1/chat/completions",
        CHAT,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {read_only_key}",
        HTTP_X_API_KEY=api_key,
        HTTP_API_KEY=api_key,
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_scope"


@pytest.mark.parametrize(
    "value",
    [
        "Basic {b64}",
        "Token {key}",
        "{key}",
        "Bearer {key}, Bearer {key}",
        "Bearer {key}x",
        "Bearer " + "A" * 10_000,
    ],
)
def test_malformed_authorization_values_are_refused(client, chat_model, api_key, value):
    b64 = base64.b64encode(api_key.encode()).decode()
    response = client.get("/v1/models", HTTP_AUTHORIZATION=value.format(key=api_key, b64=b64))
    assert response.status_code == 401


def test_a_spoofed_client_address_does_not_reset_the_rate_limit(
    client, owner, chat_model, api_key, settings
):
    ApiKey.objects.filter(user=owner).update(requests_per_minute=3)
    statuses = [
        client.get(
            "/v1/models",
            HTTP_AUTHORIZATION=f"Bearer {api_key}",
            HTTP_X_FORWARDED_FOR=f"10.0.0.{i}",
            HTTP_X_REAL_IP=f"10.0.1.{i}",
            HTTP_FORWARDED=f"for=10.0.2.{i}",
            REMOTE_ADDR=f"10.0.3.{i}",
        ).status_code
        for i in range(5)
    ]
    assert statuses == [200, 200, 200, 429, 429]


def test_keys_are_stored_as_a_hash_and_compared_in_constant_time(
    client, chat_model, api_key, monkeypatch
):
    row = ApiKey.objects.get(user__username="owner", scopes=[ApiKey.Scope.INFERENCE])
    stored = " ".join(str(v) for v in model_to_dict(row).values()) + row.key_hash
    # The secret is all after the prefix (it may hold dashes of its own: token_urlsafe).
    secret = api_key[len(key_module.KEY_START) :].partition("-")[2]
    assert len(secret) >= 40
    assert secret not in stored and api_key not in stored

    compared = []
    real = key_module.hmac.compare_digest

    def spy(a, b):
        compared.append(True)
        return real(a, b)

    monkeypatch.setattr(key_module.hmac, "compare_digest", spy)
    assert client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {api_key}").status_code == 200
    assert compared
