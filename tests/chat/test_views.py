import pytest
from django.urls import reverse

from apps.chat.models import Conversation, Message
from apps.inference.models import Generation

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


def test_pages_need_a_login(client, conversation):
    response = client.get(reverse("chat-conversation", args=[conversation.pk]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts-login"))


def test_new_conversation_uses_the_default_model(owner_client, owner, chat_model):
    response = owner_client.post(reverse("chat-conversation-new"))
    conversation = Conversation.objects.get(owner=owner)
    assert response.status_code == 302
    assert response["Location"] == reverse("chat-conversation", args=[conversation.pk])
    assert conversation.model == chat_model


def test_owner_sees_the_thread_and_settings(owner_client, conversation):
    Message.objects.create(conversation=conversation, role="user", content="Hello <b>there</b>")
    response = owner_client.get(reverse("chat-conversation", args=[conversation.pk]))
    assert response.status_code == 200
    body = response.content.decode()
    assert "Hello &lt;b&gt;there&lt;/b&gt;" in body
    assert 'name="temperature"' in body and "SmolLM2 135M Instruct" in body
    assert f'data-ws="/ws/chat/{conversation.pk}/"' in body


def test_rename_returns_the_sidebar_item(owner_client, conversation):
    response = owner_client.post(
        reverse("chat-conversation-rename", args=[conversation.pk]),
        {"title": "  Trip plans "},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert f'id="conv-{conversation.pk}"' in response.content.decode()
    assert "Trip plans" in response.content.decode()
    conversation.refresh_from_db()
    assert conversation.title == "Trip plans"


def test_delete_removes_the_conversation_and_its_messages(owner_client, conversation):
    Message.objects.create(conversation=conversation, role="user", content="hi")
    response = owner_client.post(
        reverse("chat-conversation-delete", args=[conversation.pk]), HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert response["HX-Redirect"] == "/chat/"
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    "name",
    [
        "chat-conversation",
        "chat-conversation-rename",
        "chat-conversation-delete",
        "chat-conversation-settings",
    ],
)
def test_another_user_gets_404_and_changes_nothing(client, stranger, conversation, name):
    client.force_login(stranger)
    url = reverse(name, args=[conversation.pk])
    data = {
        "title": "pwned",
        "model": "smollm2-135m-instruct",
        "system_prompt": "x",
        "temperature": 1,
        "top_p": 1,
        "max_tokens": 10,
    }
    response = client.get(url) if name == "chat-conversation" else client.post(url, data)
    assert response.status_code == 404
    conversation.refresh_from_db()
    assert (conversation.title, conversation.system_prompt, conversation.max_tokens) == (
        "Mine",
        "",
        512,
    )


def test_conversation_list_shows_only_your_own(client, stranger, conversation):
    client.force_login(stranger)
    body = client.get(reverse("chat-index")).content.decode()
    assert str(conversation.pk) not in body and "Mine" not in body


def settings_data(**overrides):
    data = {
        "model": "smollm2-135m-instruct",
        "system_prompt": "Be brief.",
        "temperature": "0.2",
        "top_p": "0.9",
        "max_tokens": "64",
    }
    data.update(overrides)
    return data


def test_settings_are_saved(owner_client, conversation):
    response = owner_client.post(
        reverse("chat-conversation-settings", args=[conversation.pk]),
        settings_data(),
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert "Saved." in response.content.decode()
    conversation.refresh_from_db()
    assert (
        conversation.system_prompt,
        conversation.temperature,
        conversation.top_p,
        conversation.max_tokens,
    ) == ("Be brief.", 0.2, 0.9, 64)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "temperature",
            "5",
            "Invalid value for temperature: Input should be less than or equal to 2",
        ),
        ("top_p", "0", "Invalid value for top_p: Input should be greater than 0"),
        (
            "max_tokens",
            "0",
            "Invalid value for max_tokens: Input should be greater than or equal to 1",
        ),
        ("max_tokens", "99999", "Ensure this value is less than or equal to 4096."),
        ("model", "gpt-17", "Unknown model &#x27;gpt-17&#x27;; pick one from the list."),
    ],
)
def test_bad_settings_are_refused_and_nothing_changes(
    owner_client, conversation, field, value, message
):
    response = owner_client.post(
        reverse("chat-conversation-settings", args=[conversation.pk]),
        settings_data(**{field: value}),
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 400
    assert message in response.content.decode()
    conversation.refresh_from_db()
    assert (conversation.system_prompt, conversation.temperature, conversation.max_tokens) == (
        "",
        0.7,
        512,
    )


def test_a_staff_only_model_cannot_be_picked_by_a_user(owner_client, conversation, chat_model):
    chat_model.visibility = "staff"
    chat_model.save()
    response = owner_client.post(
        reverse("chat-conversation-settings", args=[conversation.pk]),
        settings_data(),
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 400
    assert not Generation.objects.exists()
