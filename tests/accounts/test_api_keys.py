import subprocess

import pytest
from django.urls import reverse

from apps.accounts.keys import key_hash
from apps.accounts.models import ApiKey
from apps.accounts.services import api_key_authenticate, api_key_issue
from tests.helpers import ROOT, child_env

pytestmark = pytest.mark.django_db


def test_the_stored_key_material_is_not_the_key(owner):
    api_key, key = api_key_issue(user=owner, name="ci", scopes=["inference"])
    row = ApiKey.objects.values().get(pk=api_key.pk)
    assert key not in [str(v) for v in row.values()]
    assert row["key_hash"] == key_hash(key) and len(row["key_hash"]) == 64
    assert key.startswith(f"pg-{row['prefix']}-")
    assert api_key_authenticate(key) == api_key
    assert api_key_authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None


def test_the_account_page_shows_a_new_key_once(client, owner):
    client.force_login(owner)
    response = client.post(
        reverse("accounts-keys"),
        {"name": "laptop", "scopes": ["inference"]},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 201
    api_key = ApiKey.objects.get(user=owner)
    body = response.content.decode()
    shown = body.split('id="new-key">')[1].split("<")[0]
    assert api_key_authenticate(shown) == api_key
    page = client.get(reverse("accounts-keys")).content.decode()
    assert shown not in page and f"pg-{api_key.prefix}-…" in page


def test_bad_key_form_is_400_and_writes_nothing(client, owner):
    client.force_login(owner)
    response = client.post(
        reverse("accounts-keys"), {"name": "", "scopes": ["root"]}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 400
    assert (
        "Select a valid choice. root is not one of the available choices."
        in response.content.decode()
    )
    assert not ApiKey.objects.exists()


def test_revoke_and_isolation(client, owner, stranger):
    api_key, key = api_key_issue(user=owner, name="k", scopes=["inference"])
    client.force_login(stranger)
    assert client.post(reverse("accounts-key-revoke", args=[api_key.pk])).status_code == 404
    assert "k" not in [k.name for k in ApiKey.objects.filter(user=stranger)]
    assert f"pg-{api_key.prefix}" not in client.get(reverse("accounts-keys")).content.decode()
    assert api_key_authenticate(key) == api_key
    client.force_login(owner)
    response = client.post(
        reverse("accounts-key-revoke", args=[api_key.pk]), HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200 and "revoked" in response.content.decode()
    assert api_key_authenticate(key) is None


@pytest.mark.django_db(transaction=True)
def test_createapikey_prints_the_key_last(owner):
    from django.conf import settings

    db = settings.DATABASES["default"]
    result = subprocess.run(
        [str(ROOT / ".venv/bin/python"), "manage.py", "createapikey", "owner", "--name", "cli"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(
            DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        ),
    )
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    api_key = api_key_authenticate(key)
    assert api_key is not None and api_key.name == "cli" and api_key.scopes == ["inference"]


def test_staff_issue_and_revoke_keys_in_the_admin(admin_client, owner):
    response = admin_client.post(
        "/admin/accounts/apikey/add/",
        {
            "user": owner.pk,
            "name": "issued by staff",
            "scopes": ["inference", "read-only"],
            "requests_per_minute": "30",
        },
        follow=True,
    )
    assert response.status_code == 200
    api_key = ApiKey.objects.get(user=owner)
    shown = [str(m) for m in response.context["messages"]][0]
    key = shown.split(": ", 1)[1].split(" ")[0]
    assert api_key_authenticate(key) == api_key
    assert (api_key.scopes, api_key.requests_per_minute) == (["inference", "read-only"], 30)
    assert (
        key not in admin_client.get(f"/admin/accounts/apikey/{api_key.pk}/change/").content.decode()
    )
    admin_client.post(
        "/admin/accounts/apikey/", {"action": "revoke", "_selected_action": [api_key.pk]}
    )
    assert api_key_authenticate(key) is None
