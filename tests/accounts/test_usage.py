import pytest
from django.urls import reverse

from apps.inference.models import UsageRecord

pytestmark = pytest.mark.django_db


def record(user, model, prompt, completion, source="chat"):
    return UsageRecord.objects.create(
        user=user,
        model=model,
        source=source,
        kind="chat",
        prompt_tokens=prompt,
        completion_tokens=completion,
    )


def test_usage_page_shows_your_totals_only(client, owner, stranger, chat_model):
    record(owner, chat_model, 10, 5)
    record(owner, chat_model, 3, 2, source="api")
    record(stranger, chat_model, 1000, 1000)
    client.force_login(owner)
    body = client.get(reverse("accounts-usage")).content.decode()
    assert '<strong id="usage-total">20</strong>' in body
    assert "smollm2-135m-instruct" in body
    assert "<rect" in body and "20 tokens (13 prompt, 7 completion)" in body
    assert "2000" not in body


def test_usage_page_needs_a_login(client):
    assert client.get(reverse("accounts-usage")).status_code == 302
