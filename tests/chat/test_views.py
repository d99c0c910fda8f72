import html
import json

import pytest
from django.urls import reverse

from apps.chat.models import Conversation, Message
from apps.inference.models import Generation
from tests.factories import ConversationFactory, GenerationFactory, MessageFactory, answered_turn

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
    MessageFactory(conversation=conversation, content="Hello <b>there</b>")
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


def test_delete_hides_at_once_undo_restores_and_old_deletes_are_purged(
    owner_client, owner, conversation, chat_model
):
    from datetime import timedelta

    from django.utils import timezone

    MessageFactory(conversation=conversation, content="hi")
    response = owner_client.post(
        reverse("chat-conversation-delete", args=[conversation.pk]), HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert response["HX-Redirect"] == f"/chat/?undo={conversation.pk}"
    url = reverse("chat-conversation", args=[conversation.pk])
    assert owner_client.get(url).status_code == 404  # gone from sight at once
    page = owner_client.get(response["HX-Redirect"]).content.decode()
    assert "Undo" in page and f'href="{url}"' not in page
    restored = owner_client.post(reverse("chat-conversation-restore", args=[conversation.pk]))
    assert restored.status_code == 302 and restored["Location"] == url
    assert owner_client.get(url).status_code == 200
    assert Message.objects.filter(conversation=conversation).count() == 1

    # Deleted longer ago than the undo window: no undo, and the next delete purges it.
    owner_client.post(reverse("chat-conversation-delete", args=[conversation.pk]))
    Conversation.objects.filter(pk=conversation.pk).update(
        deleted_at=timezone.now() - timedelta(seconds=Conversation.UNDO_SECONDS + 1)
    )
    late = owner_client.post(reverse("chat-conversation-restore", args=[conversation.pk]))
    assert late.status_code == 404
    other = ConversationFactory(owner=owner)
    owner_client.post(reverse("chat-conversation-delete", args=[other.pk]))
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Message.objects.exists()
    assert Conversation.objects.filter(pk=other.pk).exists()  # still within its window


def test_search_finds_titles_questions_and_answers(owner_client, owner, chat_model):
    def chat(title, question, answer):
        conversation = ConversationFactory(owner=owner, title=title)
        answered_turn(conversation, question, answer)
        return conversation

    trip = chat("Holiday plans", "Where should I go in May?", "Try Lisbon.")
    code = chat("Python help", "How do I sort a dict?", "Use sorted(d.items()).")
    search = reverse("chat-search")

    def found(query):
        body = owner_client.get(search, {"q": query}, HTTP_HX_REQUEST="true").content.decode()
        return {c.pk for c in (trip, code) if f"conv-{c.pk}" in body}

    assert found("holiday") == {trip.pk}  # title, any case
    assert found("sort a") == {code.pk}  # the user's text
    assert found("LISBON") == {trip.pk}  # the answer
    assert found("") == {trip.pk, code.pk}
    assert "No conversation matches" in owner_client.get(search, {"q": "zebra"}).content.decode()
    assert found("Lisbon") == {trip.pk}
    page = owner_client.get(reverse("chat-index"), {"q": "python"}).content.decode()
    assert f"conv-{code.pk}" in page and f"conv-{trip.pk}" not in page


def test_pinned_conversations_come_first(owner_client, owner, chat_model):
    older = ConversationFactory(owner=owner, title="Zeta chat")
    ConversationFactory(owner=owner, title="Alpha chat")
    response = owner_client.post(
        reverse("chat-conversation-pin", args=[older.pk]), HTTP_HX_REQUEST="true"
    )
    body = response.content.decode()
    assert body.index("Zeta chat") < body.index("Alpha chat")
    assert 'id="pin-button"' in body and "Unpin" in body and 'hx-swap-oob="true"' in body
    owner_client.post(reverse("chat-conversation-pin", args=[older.pk]))
    body = owner_client.get(reverse("chat-index")).content.decode()
    assert body.index("Alpha chat") < body.index("Zeta chat")


def test_export_as_markdown_and_json_then_import_the_json(owner_client, owner, chat_model):
    import json

    conversation = ConversationFactory(
        owner=owner, title="Capitals", system_prompt="Be brief.", temperature=0.3
    )
    answered_turn(
        conversation, "Capital of Peru?", "**Lima**", params={"temperature": 0.3, "seed": 42}
    )
    failed = GenerationFactory(user=owner, status="failed")
    MessageFactory(conversation=conversation, role="assistant", generation=failed)
    export = reverse("chat-conversation-export", args=[conversation.pk])

    markdown = owner_client.get(export, {"format": "md"})
    assert markdown["Content-Disposition"] == 'attachment; filename="capitals.md"'
    text = markdown.content.decode()
    assert text.startswith("# Capitals\n") and "**System:** Be brief." in text
    assert "## You\n\nCapital of Peru?" in text and "**Lima**" in text

    exported = owner_client.get(export, {"format": "json"})
    data = json.loads(exported.content)
    assert data["format"] == "playground.conversation" and data["temperature"] == 0.3
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]  # not the failed one
    assert data["messages"][1]["params"]["seed"] == 42
    assert owner_client.get(export, {"format": "pdf"}).status_code == 400

    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("c.json", exported.content, content_type="application/json")
    response = owner_client.post(reverse("chat-conversation-import"), {"file": upload})
    imported = Conversation.objects.exclude(pk=conversation.pk).get()
    assert response["Location"] == reverse("chat-conversation", args=[imported.pk])
    assert (imported.title, imported.system_prompt, imported.temperature) == (
        "Capitals",
        "Be brief.",
        0.3,
    )
    assert [(m.role, m.text) for m in imported.messages.all()] == [
        ("user", "Capital of Peru?"),
        ("assistant", "**Lima**"),
    ]
    from apps.chat.selectors import prompt_messages

    # The imported answer is part of the context of the next question.
    assert prompt_messages(imported)[-1] == {"role": "assistant", "content": "**Lima**"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not json", "The file is not JSON"),
        (b'{"format": "other"}', "Not a conversation export"),
        (b'{"format": "playground.conversation", "version": 9}', "Unknown export version"),
        (
            b'{"format": "playground.conversation", "version": 1, "model": "nope", "messages": []}',
            "The model “nope” is not available to you",
        ),
        (
            b'{"format": "playground.conversation", "version": 1, "model": "smollm2-135m-instruct",'
            b' "messages": [{"role": "system", "content": "x"}]}',
            "messages[0] needs a",
        ),
        (
            b'{"format": "playground.conversation", "version": 1, "model": "smollm2-135m-instruct",'
            b' "temperature": 9, "messages": []}',
            "temperature",
        ),
        (
            b'{"format": "playground.conversation", "version": 1, "model": "smollm2-135m-instruct",'
            b' "messages": [{"role": "user", "content": "a\\u0000b"}]}',
            "NUL character",
        ),
    ],
)
def test_a_bad_import_says_what_to_fix_and_writes_nothing(
    owner_client, chat_model, content, message
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("c.json", content, content_type="application/json")
    response = owner_client.post(
        reverse("chat-conversation-import"), {"file": upload}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 400
    assert message in html.unescape(response.content.decode())
    assert not Conversation.objects.exists() and not Message.objects.exists()


def test_presets_shipped_saved_and_applied(owner_client, owner, stranger, conversation):
    from apps.chat.models import Preset
    from apps.chat.presets import register_shipped_presets

    register_shipped_presets(Preset)  # transactional tests flush migration rows
    translate = Preset.objects.get(owner=None, name="Translate")
    apply = reverse("chat-preset-apply", args=[conversation.pk])
    response = owner_client.post(apply, {"preset": translate.pk}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and "Applied Translate." in response.content.decode()
    conversation.refresh_from_db()
    assert conversation.system_prompt.startswith("Translate") and conversation.temperature == 0

    save = reverse("chat-preset-save", args=[conversation.pk])
    Conversation.objects.filter(pk=conversation.pk).update(temperature=0.9, max_tokens=77)
    response = owner_client.post(save, {"name": "My translator"}, HTTP_HX_REQUEST="true")
    assert "Saved as preset My translator." in response.content.decode()
    mine = Preset.objects.get(owner=owner, name="My translator")
    assert (mine.temperature, mine.max_tokens) == (0.9, 77)
    for bad, says in (("", "Give the preset a name"), ("translate", "built-in preset")):
        response = owner_client.post(save, {"name": bad}, HTTP_HX_REQUEST="true")
        assert response.status_code == 400 and says in response.content.decode()
    assert Preset.objects.filter(owner=owner).count() == 1

    # Another account neither sees nor applies it.
    other = ConversationFactory(owner=stranger)
    owner_client.force_login(stranger)
    page = owner_client.get(reverse("chat-conversation", args=[other.pk])).content.decode()
    assert "My translator" not in page and "Translate (built in)" in page
    refused = owner_client.post(reverse("chat-preset-apply", args=[other.pk]), {"preset": mine.pk})
    assert refused.status_code == 404


def test_completion_mode_starts_a_raw_prompt_with_a_seed(owner_client, owner, chat_model):
    from apps.inference.models import Generation

    url = reverse("chat-complete")
    assert owner_client.get(url).status_code == 200
    data = {"model": chat_model.slug, "prompt": "Once upon a time,\n", "temperature": 0.8}
    response = owner_client.post(url, {**data, "max_tokens": 20}, HTTP_HX_REQUEST="true")
    assert response.status_code == 201
    generation = Generation.objects.get(user=owner)
    assert (generation.kind, generation.prompt, generation.messages) == (
        "completion",
        "Once upon a time,\n",  # as typed, its last newline kept
        None,
    )
    seed = generation.params["seed"]
    assert isinstance(seed, int) and f"seed {seed}" in response.content.decode()
    again = owner_client.post(url, {**data, "max_tokens": 20, "seed": seed})
    assert again.status_code == 201
    assert Generation.objects.filter(user=owner, params__seed=seed).count() == 2
    for bad, says in (({"prompt": " "}, "Type a prompt first"), ({"max_tokens": 0}, "max_tokens")):
        response = owner_client.post(url, {**data, "max_tokens": 20, **bad})
        assert response.status_code == 400 and says in response.content.decode(), bad
    assert Generation.objects.filter(user=owner).count() == 2


@pytest.mark.parametrize(
    "name",
    [
        "chat-conversation",
        "chat-conversation-rename",
        "chat-conversation-delete",
        "chat-conversation-settings",
        "chat-conversation-pin",
        "chat-conversation-restore",
        "chat-conversation-export",
        "chat-preset-apply",
        "chat-preset-save",
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
    reads = ("chat-conversation", "chat-conversation-export")
    response = client.get(url) if name in reads else client.post(url, data)
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
        ("model", "gpt-17", "Unknown model “gpt-17”; pick one from the list."),
        (
            "json_schema",
            "{not json",
            "The JSON schema is not valid JSON (Expecting property name enclosed in double "
            "quotes at line 1, column 2).",
        ),
        (
            "json_schema",
            '{"type": "array", "uniqueItems": true}',
            "The JSON Schema keyword &quot;uniqueItems&quot; is not supported in the JSON "
            "schema; remove it",
        ),
        ("json_schema", "[1, 2]", "The JSON schema must be a JSON Schema object."),
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
    assert conversation.json_schema is None


def test_a_json_schema_is_saved_shown_again_and_cleared(owner_client, conversation):
    url = reverse("chat-conversation-settings", args=[conversation.pk])
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    response = owner_client.post(url, settings_data(json_schema=json.dumps(schema)))
    assert response.status_code == 200
    conversation.refresh_from_db()
    assert conversation.json_schema == schema
    assert "grammar" in conversation.sampling_settings()
    page = owner_client.get(reverse("chat-conversation", args=[conversation.pk])).content.decode()
    assert "&quot;required&quot;: [" in page  # the box shows it, indented
    owner_client.post(url, settings_data(json_schema="  "))
    conversation.refresh_from_db()
    assert conversation.json_schema is None and "grammar" not in conversation.sampling_settings()


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
