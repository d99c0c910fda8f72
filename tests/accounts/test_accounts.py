import subprocess

import pytest
from django.urls import reverse

from apps.accounts.models import User
from tests.factories import PASSWORD
from tests.helpers import ROOT, child_env

pytestmark = pytest.mark.django_db


def test_sign_up_creates_the_account_and_logs_in(client):
    response = client.post(
        reverse("accounts-signup"),
        {
            "username": "newbie",
            "password1": "a-long-passphrase-42",
            "password2": "a-long-passphrase-42",
        },
    )
    assert response.status_code == 302 and response["Location"] == reverse("chat-index")
    user = User.objects.get(username="newbie")
    assert user.check_password("a-long-passphrase-42")
    assert client.get(reverse("chat-index")).status_code == 200


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"username": "x", "password1": "a-long-passphrase-42", "password2": "different-42"},
            "The two password fields didn’t match.",
        ),
        ({"username": "x", "password1": "123", "password2": "123"}, "This password is too short."),
        (
            {
                "username": "owner",
                "password1": "a-long-passphrase-42",
                "password2": "a-long-passphrase-42",
            },
            "A user with that username already exists.",
        ),
    ],
)
def test_bad_sign_up_is_refused_and_writes_nothing(client, owner, data, message):
    response = client.post(reverse("accounts-signup"), data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert list(User.objects.values_list("username", flat=True)) == ["owner"]


def test_log_in_and_out(client, owner):
    response = client.post(reverse("accounts-login"), {"username": "owner", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get(reverse("chat-index")).status_code == 200
    client.post(reverse("accounts-logout"))
    assert client.get(reverse("chat-index")).status_code == 302


def test_wrong_password_does_not_log_in(client, owner):
    response = client.post(reverse("accounts-login"), {"username": "owner", "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password." in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_createsuperuser_noinput_from_the_environment(django_db_setup):
    from django.conf import settings

    db = settings.DATABASES["default"]
    result = subprocess.run(
        [
            str(ROOT / ".venv/bin/python"),
            "manage.py",
            "createsuperuser",
            "--noinput",
            "--email",
            "root@example.org",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(
            DJANGO_SUPERUSER_USERNAME="root",
            DJANGO_SUPERUSER_PASSWORD="s3cret-pass-word",
            DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        ),
    )
    assert result.returncode == 0, result.stderr
    root = User.objects.get(username="root")
    assert root.is_superuser and root.is_staff and root.check_password("s3cret-pass-word")
