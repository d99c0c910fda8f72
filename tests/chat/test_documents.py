"""Documents in the chat: attached to the next message (the file kept per user under the media
root, its text read, its tokens counted on the conversation's model), sent with it into the
prompt in the documented form, refused with its count when it would not fit, and reachable by
its owner only."""

from __future__ import annotations

from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.urls import reverse

from apps.catalog.selectors import active_version, version_spec
from apps.chat.models import Conversation, Document, Message
from apps.core.documents import with_documents
from apps.inference.models import Generation
from apps.inference.tokens import token_count
from tests.documents import text_pdf
from tests.helpers import wait_for

from .conftest import communicator
from .test_consumers import receive_until

pytestmark = pytest.mark.django_db(transaction=True)

NOTES = b"# Otters\n\nSea otters hold hands while they sleep, so they do not drift apart.\n"


def upload(name: str, data: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data)


def attach(client, name: str, data: bytes, **fields):
    return client.post(reverse("chat-document-attach"), {"file": upload(name, data), **fields})


def media_files(settings) -> list[Path]:
    root = Path(settings.MEDIA_ROOT) / "documents"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture(autouse=True)
def _media_of_its_own(settings, tmp_path):
    """A media root per test, so that what a test finds there is its own."""
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


def test_an_attached_document_is_kept_read_and_counted(owner_client, owner, conversation, settings):
    response = attach(owner_client, "otters.md", NOTES, conversation=str(conversation.pk))
    assert response.status_code == 200, response.content
    document = Document.objects.get(owner=owner)
    block = with_documents("", [("otters.md", NOTES.decode().strip())])
    expected = token_count(version_spec(active_version(conversation.model)), block)
    assert expected is not None and 20 < expected < 40
    assert (document.name, document.kind, document.bytes, document.tokens, document.message) == (
        "otters.md",
        "Markdown",
        len(NOTES),
        expected,
        None,
    )
    assert document.text == NOTES.decode().strip()
    # The file itself, under a generated name in the owner's own folder.
    [stored] = media_files(settings)
    assert stored == Path(settings.MEDIA_ROOT) / f"documents/{owner.pk}/{document.pk}.md"
    assert stored.read_bytes() == NOTES
    # The chip the composer shows: name, size, tokens, and the id the message will carry.
    body = response.json()
    assert body["id"] == str(document.pk)
    assert f'name="documents" value="{document.pk}"' in body["html"]
    assert "otters.md" in body["html"] and f"{expected} tokens" in body["html"]
    assert f"Markdown · {len(NOTES)}\xa0bytes · {expected} tokens" in body["html"]


def test_a_pdf_on_the_arrival_composer_is_counted_for_the_picked_model(owner_client, chat_model):
    pdf = text_pdf([["Quarterly report.", "Revenue grew by four percent."]])
    response = attach(owner_client, "report.pdf", pdf, model=chat_model.slug)
    assert response.status_code == 200, response.content
    document = Document.objects.get()
    assert (document.kind, document.text) == (
        "PDF",
        "Quarterly report.\nRevenue grew by four percent.",
    )
    assert document.tokens == token_count(
        version_spec(active_version(chat_model)),
        with_documents("", [("report.pdf", document.text)]),
    )


def test_a_document_over_the_context_is_refused_with_its_count_and_nothing_kept(
    owner_client, conversation, settings
):
    text = "Otters are playful and curious animals. " * 1400
    response = attach(owner_client, "long.txt", text.encode(), conversation=str(conversation.pk))
    assert response.status_code == 400
    tokens = token_count(
        version_spec(active_version(conversation.model)),
        with_documents("", [("long.txt", text.strip())]),
    )
    assert tokens is not None and tokens + conversation.max_tokens > 8192
    assert response.json() == {
        "error": f"“long.txt” is {tokens:,} tokens; “SmolLM2 135M Instruct” reads 8,192 at most, "
        "512 of them kept for the answer. Attach a shorter document, or a part of it."
    }
    assert not Document.objects.exists() and media_files(settings) == []


def test_unreadable_and_oversized_files_are_refused_and_nothing_kept(
    owner_client, conversation, settings
):
    response = attach(owner_client, "deck.pptx", b"PK\x03\x04", conversation=str(conversation.pk))
    assert response.status_code == 400
    assert response.json()["error"].startswith("“deck.pptx” is not a kind of document read here")
    settings.CHAT_MAX_DOCUMENT_BYTES = 10
    response = attach(owner_client, "notes.md", NOTES, conversation=str(conversation.pk))
    assert response.status_code == 413
    assert response.json() == {
        "error": f"“notes.md”: The file has {len(NOTES)} bytes; the limit is 10."
    }
    response = owner_client.post(reverse("chat-document-attach"), {})
    assert (response.status_code, response.json()) == (400, {"error": "Choose a file to attach."})
    assert not Document.objects.exists() and media_files(settings) == []


@pytest.mark.usefixtures("inline_worker")
async def test_a_message_with_a_document_puts_its_text_in_the_prompt(owner, conversation):
    client = await database_sync_to_async(_logged_in)(owner)
    response = await database_sync_to_async(attach)(
        client, "otters.md", NOTES, conversation=str(conversation.pk)
    )
    document_id = response.json()["id"]
    ws = await communicator(owner, conversation.pk)
    await ws.connect()
    await ws.send_json_to({"action": "send", "text": "Summarise it.", "documents": [document_id]})
    events = await receive_until(ws, "done", timeout=30)
    # The user's turn shows the document as a chip linking to its file, and their own text.
    assert reverse("chat-document", args=[document_id]) in events[0]["html"]
    assert 'name="documents"' not in events[0]["html"]  # sent: no longer removable
    answer = await database_sync_to_async(
        lambda: Message.objects.select_related("generation").get(role="assistant")
    )()
    prompt = '<document name="otters.md">\n' + NOTES.decode().strip() + "\n</document>\n\n"
    # The fake engine echoes the last user turn as the prompt holds it.
    assert answer.generation.output == "Echo: " + prompt + "Summarise it."
    document = await database_sync_to_async(Document.objects.get)()
    question = await database_sync_to_async(Message.objects.get)(role="user")
    assert (document.message_id, question.content) == (question.pk, "Summarise it.")
    # Sent once: the same document cannot ride on a second message.
    await ws.send_json_to({"action": "send", "text": "Again.", "documents": [document_id]})
    event = await ws.receive_json_from(timeout=10)
    assert event == {
        "type": "error",
        "message": "An attached document is no longer there (sent already, or removed); "
        "attach it again.",
    }
    assert await database_sync_to_async(Message.objects.count)() == 2
    await ws.disconnect()


def _logged_in(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


@pytest.mark.usefixtures("inline_worker")
def test_a_document_alone_starts_a_conversation_titled_by_its_name(owner_client, owner, chat_model):
    document_id = attach(owner_client, "otters.md", NOTES, model=chat_model.slug).json()["id"]
    response = owner_client.post(
        reverse("chat-conversation-new"),
        {"text": "", "model": chat_model.slug, "documents": [document_id]},
    )
    assert response.status_code == 302
    conversation = Conversation.objects.get(owner=owner)
    assert conversation.title == "otters.md"
    question, answer = conversation.messages.order_by("created_at")
    assert (question.content, list(question.documents.values_list("pk", flat=True))) == (
        "",
        [Document.objects.get().pk],
    )
    wait_for(lambda: Generation.objects.get(pk=answer.generation_id).is_finished, timeout=30)
    answer.generation.refresh_from_db()
    assert answer.generation.output.startswith('Echo: <document name="otters.md">\n# Otters')


def test_a_refused_first_message_keeps_its_documents_on_the_composer(
    owner_client, owner, chat_model, settings
):
    document_id = attach(owner_client, "otters.md", NOTES, model=chat_model.slug).json()["id"]
    settings.CHAT_MAX_MESSAGE_CHARS = 5
    response = owner_client.post(
        reverse("chat-conversation-new"),
        {"text": "Summarise this, please.", "model": chat_model.slug, "documents": [document_id]},
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert f'name="documents" value="{document_id}"' in body
    assert not Conversation.objects.exists()
    assert Document.objects.get().message is None  # still unsent, ready for the next try


def test_documents_are_their_owners_alone(owner_client, owner, stranger, conversation, client):
    document_id = attach(
        owner_client, "otters.md", NOTES, conversation=str(conversation.pk)
    ).json()["id"]
    download = owner_client.get(reverse("chat-document", args=[document_id]))
    assert download.status_code == 200
    assert download["Content-Disposition"] == 'attachment; filename="otters.md"'
    assert b"".join(download.streaming_content) == NOTES
    client.force_login(stranger)
    assert client.get(reverse("chat-document", args=[document_id])).status_code == 404
    # Nor can they attach to the owner's conversation, or send the owner's document.
    refused = attach(client, "mine.md", NOTES, conversation=str(conversation.pk))
    assert refused.status_code == 404
    response = client.post(
        reverse("chat-conversation-new"), {"text": "Read this.", "documents": [document_id]}
    )
    assert response.status_code == 400
    assert "An attached document is no longer there" in response.content.decode()
    assert not Conversation.objects.filter(owner=stranger).exists()
    assert Document.objects.get().message is None
    assert Document.objects.filter(owner=stranger).count() == 0


@pytest.mark.usefixtures("inline_worker")
def test_purging_a_deleted_conversation_removes_its_documents_files(
    owner_client, owner, conversation, settings, django_capture_on_commit_callbacks
):
    from apps.chat import services

    document = services.document_attach(
        owner=owner, model=conversation.model, filename="a.md", data=NOTES, max_tokens=10
    )
    services.chat_message_send(conversation=conversation, text="", documents=[str(document.pk)])
    assert len(media_files(settings)) == 1
    services.conversation_delete(conversation=conversation)
    Conversation.objects.filter(pk=conversation.pk).update(deleted_at="2000-01-01T00:00:00Z")
    assert owner_client.get(reverse("chat-document", args=[document.pk])).status_code == 404
    other = Conversation.objects.create(owner=owner, model=conversation.model)
    with django_capture_on_commit_callbacks(execute=True):
        services.conversation_delete(conversation=other)  # purges the one past its undo window
    assert not Document.objects.exists() and media_files(settings) == []
