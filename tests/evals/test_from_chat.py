"""An answer worth keeping becomes an eval item: the conversation up to it (system prompt and
earlier turns included) its input, the model's answer or the user's correction its ideal."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from apps.evals.models import EvalItem, EvalSet
from tests.factories import ConversationFactory, answered_turn

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner_client(owner):
    client = Client()
    client.force_login(owner)
    return client


@pytest.fixture
def answer(owner, chat_model):
    conversation = ConversationFactory(owner=owner, model=chat_model, system_prompt="Be brief.")
    answered_turn(conversation, "What is 2 + 2?", "4")
    return answered_turn(conversation, "And 3 + 3?", "It is 7.")


def test_an_answer_and_its_correction_become_an_item_of_a_new_set(owner_client, owner, answer):
    form = owner_client.get(reverse("evals-add"), {"message": answer.pk}).content.decode()
    assert "It is 7." in form and 'value="new"' in form
    response = owner_client.post(
        reverse("evals-add-save"),
        {"message": answer.pk, "eval_set": "new", "name": "Sums", "ideal": "6"},
    )
    assert response.status_code == 200 and "Sums" in response.content.decode()
    eval_set = EvalSet.objects.get(owner=owner)
    item = eval_set.items.get()
    assert (eval_set.name, item.line, item.ideal, item.metadata) == (
        "Sums",
        1,
        ["6"],
        {"source": "chat"},
    )
    assert item.input == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3 + 3?"},
    ]
    # A second one goes to the end of an existing set.
    owner_client.post(
        reverse("evals-add-save"),
        {"message": answer.pk, "eval_set": str(eval_set.pk), "ideal": "It is 6."},
    )
    assert list(eval_set.items.values_list("line", "ideal")) == [(1, ["6"]), (2, ["It is 6."])]


def test_a_blank_ideal_or_name_is_refused_and_nothing_written(owner_client, answer):
    response = owner_client.post(
        reverse("evals-add-save"),
        {"message": answer.pk, "eval_set": "new", "name": "", "ideal": "6"},
    )
    assert response.status_code == 400
    assert "Give the new eval set a name." in response.content.decode()
    response = owner_client.post(
        reverse("evals-add-save"),
        {"message": answer.pk, "eval_set": "new", "name": "S", "ideal": "  "},
    )
    assert response.status_code == 400
    assert not EvalSet.objects.exists() and not EvalItem.objects.exists()


def test_another_accounts_answer_or_set_is_out_of_reach(owner_client, answer, stranger):
    other = Client()
    other.force_login(stranger)
    assert other.get(reverse("evals-add"), {"message": answer.pk}).status_code == 404
    saved = other.post(
        reverse("evals-add-save"),
        {"message": answer.pk, "eval_set": "new", "name": "x", "ideal": "y"},
    )
    assert saved.status_code == 404
    mine = EvalSet.objects.create(owner=stranger, name="theirs")
    # The owner cannot add to the stranger's set either.
    response = owner_client.post(
        reverse("evals-add-save"), {"message": answer.pk, "eval_set": str(mine.pk), "ideal": "6"}
    )
    assert response.status_code == 404
    assert not EvalItem.objects.exists()


def test_the_chat_offers_it_under_each_answer(owner_client, answer):
    page = owner_client.get(reverse("chat-conversation", args=[answer.conversation_id]))
    assert f"{reverse('evals-add')}?message={answer.pk}" in page.content.decode()
