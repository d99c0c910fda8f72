import json
import re

import pytest
from django.urls import reverse
from django.utils import timezone

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
    body = client.get(reverse("inference-usage")).content.decode()
    assert '<strong id="usage-total">20</strong>' in body
    assert "smollm2-135m-instruct" in body
    # The chart's figures (drawn by the browser) and the table of the same days.
    today = timezone.now().date().isoformat()
    data = json.loads(re.search(r'id="usage-data"[^>]*>(.*?)</script>', body, re.S).group(1))
    assert len(data) == 30 and data[-1] == {
        "day": today,
        "prompt_tokens": 13,
        "completion_tokens": 7,
        "total": 20,
    }
    assert f"<tr><td>{today}</td><td>13</td><td>7</td><td>20</td></tr>" in body
    assert "2000" not in body


def test_usage_page_needs_a_login(client):
    assert client.get(reverse("inference-usage")).status_code == 302


def test_answers_in_flight_count_against_the_quota(owner, chat_model):
    from apps.accounts.limits import LimitExceeded
    from apps.inference.usage import token_window
    from tests.factories import GenerationFactory

    owner.daily_token_quota = 100
    record(owner, chat_model, 20, 10)
    assert token_window(owner).remaining == 70
    GenerationFactory(user=owner, params={"max_tokens": 64}, status="running")
    assert token_window(owner).remaining == 6
    GenerationFactory(user=owner, params={"max_tokens": 8}, status="queued")
    with pytest.raises(LimitExceeded) as caught:
        token_window(owner)
    assert caught.value.window.remaining == 0
