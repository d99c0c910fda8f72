"""``manage.py messages``: bring the catalogues under ``locale/`` up to date with the templates,
the code and the scripts (Django's ``makemessages`` for both domains, over the project's own
files only). New strings arrive untranslated; the translation test fails until each has its
Chinese."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

# Not the project's own text: dependencies, build output, tests and benchmarks.
IGNORE = [
    ".*",
    "node_modules",
    "var",
    "tests",
    "bench",
    "test-artifacts",
    "scripts",
    "locale",
    "*.min.js",
]
DOMAINS = ("django", "djangojs")


def translated_languages() -> list[str]:
    """The catalogue locales: every language but the source's, as ``zh_Hans``."""
    from django.utils.translation import to_locale

    return [to_locale(code) for code, _ in settings.LANGUAGES if code != settings.LANGUAGE_CODE]


class Command(BaseCommand):
    help = "Update locale/*/LC_MESSAGES/django.po and djangojs.po from the project's files."

    def handle(self, *args: Any, **options: Any) -> None:
        for domain in DOMAINS:
            call_command(
                "makemessages",
                locale=translated_languages(),
                domain=domain,
                ignore_patterns=IGNORE,
                no_obsolete=True,
                verbosity=options["verbosity"],
            )
