"""The chat page's arrival: /chat/ opens on a composer and a model picker, and the first message
makes the conversation (titled from it) and starts its answer; a refused message makes nothing."""

from __future__ import annotations

import pytest
from django.urls import reverse

from apps.catalog.models import LanguageModel
from apps.chat.models import Conversation, Message
from apps.inference.models import Generation, UsageRecord
from tests.factories import ModelVersionFactory
from tests.helpers import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


@pytest.fixture
def second_model(chat_model) -> LanguageModel:
    """A second public chat model (the fake engine answers for any weights)."""
    model = LanguageModel.objects.create(
        slug="smollm2-second", display_name="Second model", task=LanguageModel.Task.CHAT
    )
    ModelVersionFactory(model=model, is_active=True, context_length=2048)
    return model


def test_the_chat_page_opens_on_a_composer_with_the_default_model_picked(
    owner_client, chat_model, second_model
):
    body = owner_client.get(reverse("chat-index")).content.decode()
    assert 'id="arrival"' in body and 'name="text"' in body
    assert f'<option value="{chat_model.slug}" selected>' in body
    assert f'<option value="{second_model.slug}">' in body
    assert body.count('name="starter"') >= 3


@pytest.mark.usefixtures("inline_worker")
def test_the_first_message_makes_the_conversation_and_its_answer(owner_client, owner, second_model):
    response = owner_client.post(
        reverse("chat-conversation-new"),
        {"text": "  Tell me about otters.  ", "model": second_model.slug},
    )
    conversation = Conversation.objects.get(owner=owner)
    assert response.status_code == 302
    assert response["Location"] == reverse("chat-conversation", args=[conversation.pk])
    assert (conversation.title, conversation.model) == ("Tell me about otters.", second_model)
    question, answer = conversation.messages.order_by("created_at")
    assert (question.role, question.content) == ("user", "Tell me about otters.")
    assert answer.generation.model_version.model == second_model
    wait_for(lambda: Generation.objects.get(pk=answer.generation_id).is_finished, timeout=30)
    answer.generation.refresh_from_db()
    assert answer.generation.status == "succeeded", answer.generation.error_message
    assert answer.generation.output == "Echo: Tell me about otters."  # the fake engine's answer
    # The page it opens shows the question and the answer.
    page = owner_client.get(response["Location"]).content.decode()
    assert "Tell me about otters." in page and "Echo: Tell me about otters." in page


@pytest.mark.usefixtures("inline_worker")
def test_a_starter_prompt_is_sent_as_the_first_message(owner_client, owner, chat_model):
    starter = "Write a haiku about the sea."
    response = owner_client.post(
        reverse("chat-conversation-new"), {"text": "", "starter": starter, "model": ""}
    )
    assert response.status_code == 302
    conversation = Conversation.objects.get(owner=owner)
    assert (conversation.title, conversation.model) == (starter, chat_model)
    assert conversation.messages.filter(role="user", content=starter).exists()


def test_a_refused_first_message_keeps_the_text_and_makes_nothing(
    owner_client, owner, stranger, chat_model, settings
):
    private = LanguageModel.objects.create(
        slug="strangers-own",
        display_name="Not yours",
        task=LanguageModel.Task.CHAT,
        visibility=LanguageModel.Visibility.PRIVATE,
        owner=stranger,
    )
    ModelVersionFactory(model=private, is_active=True)
    settings.CHAT_MAX_MESSAGE_CHARS = 50
    cases = [
        ({"text": "   "}, 400, "Type a message first."),
        ({"text": "x" * 51}, 400, "The message has 51 characters; the limit is 50."),
        ({"text": "hi", "model": "no-such-model"}, 400, "There is no chat model “no-such-model”"),
        ({"text": "hi", "model": private.slug}, 400, "There is no chat model “strangers-own”"),
    ]
    for form, status, message in cases:
        response = owner_client.post(reverse("chat-conversation-new"), form)
        body = response.content.decode()
        assert response.status_code == status, form
        assert message in body, form
        assert 'id="arrival"' in body and form["text"].strip() in body  # the text is kept
    # The daily quota used up: refused with its figures, nothing written.
    owner.daily_token_quota = 10
    owner.save()
    UsageRecord.objects.create(
        user=owner, model=chat_model, source="chat", kind="chat", prompt_tokens=10
    )
    response = owner_client.post(reverse("chat-conversation-new"), {"text": "hello there"})
    assert response.status_code == 429
    assert "Daily token quota reached" in response.content.decode()
    assert "hello there" in response.content.decode()
    assert not Conversation.objects.filter(owner=owner).exists()
    assert not Message.objects.exists() and not Generation.objects.exists()


def test_an_empty_post_still_makes_an_empty_conversation(owner_client, owner, chat_model):
    """The route as it was before the arrival composer (older pages and scripts)."""
    response = owner_client.post(reverse("chat-conversation-new"))
    conversation = Conversation.objects.get(owner=owner)
    assert response.status_code == 302 and conversation.messages.count() == 0
