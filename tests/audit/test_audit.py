"""The audit log (who changed which model, version, visibility, key, quota or user setting) and
the privacy of conversations in the admin."""

from __future__ import annotations

import pytest

from apps.accounts.models import ApiKey
from apps.audit.models import AuditEntry
from apps.catalog.models import ModelVersion
from apps.chat.models import Conversation
from apps.inference.models import Generation
from tests.factories import ApiKeyFactory, ConversationFactory, ModelVersionFactory, answered_turn
from tests.helpers import admin_form_data

pytestmark = pytest.mark.django_db


def entries(**filters) -> list[tuple[str, str, str, dict]]:
    return [
        (e.actor_name, e.action, e.target_type, e.changes)
        for e in AuditEntry.objects.filter(**filters).order_by("at", "id")
    ]


def test_visibility_changes_in_the_admin_are_logged_with_before_and_after(
    admin_client, chat_model, owner, teammate
):
    url = f"/admin/catalog/languagemodel/{chat_model.pk}/change/"
    data = admin_form_data(admin_client.get(url))
    data.update(visibility="listed", allowed_users=[str(owner.pk), str(teammate.pk)])
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert entries(target_type="catalog.languagemodel") == [
        (
            "admin",
            "update",
            "catalog.languagemodel",
            {
                "allowed_users": [[], sorted([str(owner), str(teammate)])],
                "visibility": ["public", "listed"],
            },
        )
    ]
    # Saving again without a change writes nothing.
    admin_client.post(url, admin_form_data(admin_client.get(url)))
    assert AuditEntry.objects.count() == 1


def test_a_quota_change_is_logged_and_password_hashes_never_are(admin_client, owner):
    # The admin's date and time inputs drop microseconds, as a browser's post would.
    owner.date_joined = owner.date_joined.replace(microsecond=0)
    owner.save()
    url = f"/admin/accounts/user/{owner.pk}/change/"
    data = admin_form_data(admin_client.get(url))
    data["daily_token_quota"] = "5000"
    assert admin_client.post(url, data).status_code == 302
    [(actor, action, target, changes)] = entries(target_type="accounts.user")
    assert (actor, action, changes) == ("admin", "update", {"daily_token_quota": [None, 5000]})

    password_url = f"/admin/accounts/user/{owner.pk}/password/"
    admin_client.post(
        password_url,
        {"password1": "another-long-pass-77", "password2": "another-long-pass-77"},
    )
    assert owner.password not in str(list(AuditEntry.objects.values_list("changes", flat=True)))


def test_keys_issued_and_revoked_by_their_owner_are_logged(client, owner):
    client.force_login(owner)
    assert (
        client.post("/accounts/keys/", {"name": "ci", "scopes": ["inference"]}).status_code == 201
    )
    key = ApiKey.objects.get(user=owner)
    client.post(f"/accounts/keys/{key.pk}/revoke/")
    assert entries(target_type="accounts.apikey") == [
        (
            "owner",
            "issue",
            "accounts.apikey",
            {"name": "ci", "user": "owner", "scopes": ["inference"]},
        ),
        ("owner", "revoke", "accounts.apikey", {}),
    ]


def test_the_log_is_read_only_in_the_admin(admin_client, chat_model):
    version = chat_model.active_version
    admin_client.post(
        "/admin/catalog/modelversion/", {"action": "activate", "_selected_action": [version.pk]}
    )
    entry = AuditEntry.objects.create(
        action="update", target_type="x.y", target_id="1", target_repr="thing"
    )
    assert admin_client.get("/admin/audit/auditentry/").status_code == 200
    assert admin_client.get("/admin/audit/auditentry/add/").status_code == 403
    url = f"/admin/audit/auditentry/{entry.pk}/change/"
    assert admin_client.post(url, {"action": "delete"}).status_code == 403
    assert admin_client.post(f"/admin/audit/auditentry/{entry.pk}/delete/").status_code == 403
    assert AuditEntry.objects.filter(pk=entry.pk, action="update").exists()


def test_a_bad_version_source_is_refused_in_the_admin_and_nothing_is_written(
    admin_client, chat_model
):
    base = {
        "model": str(chat_model.pk),
        "label": "next",
        "source_kind": "local",
        "source": "/etc",
        "context_length": "2048",
        "dtype": "auto",
        "engine": "auto",
        "device": "auto",
        "default_params": "{}",
    }
    cases = [
        ({}, "source", "is outside the models root"),
        ({"source": "../../../etc"}, "source", "is outside the models root"),
        ({"source": "mine", "revision": "main"}, "revision", "Only hub sources"),
        ({"source": "mine", "default_params": '{"temperature": 5}'}, "default_params", "2"),
        ({"source": "mine", "default_params": '{"seed": 1}'}, "default_params", "Unknown"),
        ({"source_kind": "packaged", "source": "torch/../../etc"}, "source", "without '..'"),
        ({"source_kind": "packaged", "source": "torch//etc"}, "source", "without '..'"),
        ({"source": "mine", "engine": "llamacpp"}, "engine", "llama.cpp serves one GGUF file"),
    ]
    for change, field, message in cases:
        response = admin_client.post("/admin/catalog/modelversion/add/", {**base, **change})
        assert response.status_code == 200, change
        errors = response.context["adminform"].form.errors
        assert message in " ".join(errors.get(field, [])), (change, errors)
    assert ModelVersion.objects.filter(label="next").count() == 0
    assert AuditEntry.objects.count() == 0

    ok = admin_client.post("/admin/catalog/modelversion/add/", {**base, "source": "mine"})
    assert ok.status_code == 302
    [(actor, action, target, changes)] = entries(target_type="catalog.modelversion")
    assert (actor, action) == ("admin", "create")
    assert changes["source"] == [None, "mine"] and changes["is_active"] == [None, False]


@pytest.fixture
def private_chat(owner, chat_model) -> Conversation:
    conversation = ConversationFactory(owner=owner, title="Holiday plans")
    answered_turn(conversation, "my secret plan", "the secret answer")
    return conversation


def test_staff_do_not_read_conversations_by_default(admin_client, private_chat):
    generation = Generation.objects.get()
    for url in (
        f"/admin/chat/conversation/{private_chat.pk}/change/",
        f"/admin/inference/generation/{generation.pk}/change/",
        "/admin/chat/conversation/",
    ):
        page = admin_client.get(url).content.decode()
        assert "secret" not in page and "Holiday" not in page, url
    assert not AuditEntry.objects.filter(action="view").exists()


def test_when_conversation_access_is_on_each_read_is_logged(admin_client, private_chat, settings):
    settings.ADMIN_CONVERSATION_ACCESS = True
    generation = Generation.objects.get()
    page = admin_client.get(f"/admin/chat/conversation/{private_chat.pk}/change/").content.decode()
    assert "my secret plan" in page and "Holiday plans" in page
    page = admin_client.get(f"/admin/inference/generation/{generation.pk}/change/").content.decode()
    assert "the secret answer" in page
    assert entries(action="view") == [
        ("admin", "view", "chat.conversation", {"owner": "owner"}),
        ("admin", "view", "inference.generation", {"owner": "owner"}),
    ]


@pytest.mark.django_db(transaction=True)
async def test_deactivating_a_user_closes_their_socket_and_stops_their_keys(
    admin_client, owner, chat_model, client
):
    from asgiref.sync import sync_to_async

    from tests.chat.conftest import communicator

    def prepare():
        owner.date_joined = owner.date_joined.replace(microsecond=0)
        owner.save()
        return ApiKeyFactory(user=owner).key, ConversationFactory(owner=owner)

    key, conversation = await sync_to_async(prepare)()
    ws = await communicator(owner, conversation.pk)
    connected, _ = await ws.connect()
    assert connected

    def deactivate() -> int:
        url = f"/admin/accounts/user/{owner.pk}/change/"
        data = admin_form_data(admin_client.get(url))
        del data["is_active"]
        return admin_client.post(url, data).status_code

    assert await sync_to_async(deactivate)() == 302
    assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": 4403}

    def after() -> tuple[int, list]:
        status = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {key}").status_code
        return status, entries(target_type="accounts.user")

    status, logged = await sync_to_async(after)()
    assert status == 401
    [(actor, action, _target, changes)] = logged
    assert (actor, action, changes["is_active"]) == ("admin", "update", [True, False])


def test_staff_who_may_only_view_cannot_run_the_registry_actions(client, chat_model):
    from django.contrib.auth.models import Permission

    from tests.factories import UserFactory

    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.add(
        Permission.objects.get(codename="view_modelversion"),
        Permission.objects.get(codename="view_languagemodel"),
    )
    client.force_login(viewer)
    version = chat_model.active_version
    other = ModelVersionFactory(model=chat_model, label="other")
    page = client.get("/admin/catalog/modelversion/").content.decode()
    assert 'value="activate"' not in page and 'value="load_on_workers"' not in page
    client.post(
        "/admin/catalog/modelversion/", {"action": "activate", "_selected_action": [other.pk]}
    )
    client.post(
        "/admin/catalog/languagemodel/", {"action": "disable", "_selected_action": [chat_model.pk]}
    )
    version.refresh_from_db()
    chat_model.refresh_from_db()
    assert version.is_active and chat_model.is_enabled
    assert not AuditEntry.objects.exists()
