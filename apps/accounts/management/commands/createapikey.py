"""``manage.py createapikey USERNAME [--name NAME] [--scope SCOPE ...]``: the key is the last line."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.accounts.models import ApiKey, User
from apps.accounts.services import api_key_issue


class Command(BaseCommand):
    help = "Issue an API key for a user and print it (it is not stored and cannot be shown again)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="cli")
        parser.add_argument(
            "--scope",
            action="append",
            choices=ApiKey.Scope.values,
            help="repeatable; default: inference",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = User.objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user named {options['username']!r}")
        scopes = options["scope"] or [ApiKey.Scope.INFERENCE.value]
        api_key, key = api_key_issue(user=user, name=options["name"], scopes=scopes)
        self.stderr.write(
            f"Issued key {api_key.name!r} for {user.username} with scopes "
            f"{', '.join(scopes)}. It is shown once:"
        )
        self.stdout.write(key)
