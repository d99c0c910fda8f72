"""The Chinese catalogue is complete: every string the templates, the code and the scripts mark
for translation has its Chinese, in the catalogue as ``manage.py messages`` would bring it up to
date now (a string added since arrives untranslated and fails here), and the compiled catalogue
the pages use is the one written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import translation

from apps.core.management.commands.messages import DOMAINS
from tests.helpers import ROOT

CATALOGUE = ROOT / "locale" / "zh_Hans" / "LC_MESSAGES"


def statistics(po: Path) -> str:
    done = subprocess.run(
        ["msgfmt", "--check", "--statistics", "-o", os.devnull, str(po)],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stderr.strip()


def untranslated(po: Path) -> str:
    """The entries of ``po`` without a translation, or fuzzy, as gettext prints them."""
    found = subprocess.run(
        ["msgattrib", "--only-fuzzy", "--no-wrap", str(po)], capture_output=True, text=True
    ).stdout
    found += subprocess.run(
        ["msgattrib", "--untranslated", "--no-wrap", str(po)], capture_output=True, text=True
    ).stdout
    return found


# What makemessages reads (it writes into the locale folder beside them: a copy, here).
SOURCES = ("apps", "playground", "templates", "static", "locale")


def test_every_message_in_the_catalogue_has_its_chinese(tmp_path, settings, monkeypatch):
    for name in SOURCES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("*.mo"))
    settings.LOCALE_PATHS = [tmp_path / "locale"]
    monkeypatch.chdir(tmp_path)  # makemessages reads the files under the working directory
    call_command("messages", verbosity=0)
    for domain in DOMAINS:
        po = tmp_path / "locale" / "zh_Hans" / "LC_MESSAGES" / f"{domain}.po"
        figures = statistics(po)
        assert re.fullmatch(r"\d+ translated messages?\.", figures), (
            f"{domain}.po: {figures}\nRun `manage.py messages`, then translate:\n{untranslated(po)}"
        )
        # The catalogue kept in the repository holds the same messages (nothing left stale).
        assert statistics(CATALOGUE / f"{domain}.po") == figures


@pytest.mark.parametrize("domain", DOMAINS)
def test_the_compiled_catalogue_is_the_written_one(domain, tmp_path):
    mo = CATALOGUE / f"{domain}.mo"
    assert mo.is_file(), "make install compiles the catalogues"
    fresh = tmp_path / "fresh.mo"
    subprocess.run(["msgfmt", "-o", str(fresh), str(CATALOGUE / f"{domain}.po")], check=True)
    assert mo.read_bytes() == fresh.read_bytes(), "make install compiles the catalogues"


def test_placeholders_survive_translation():
    """Django fails loudly on a translation that lost a placeholder only when it is rendered;
    msgfmt --check (above) checks the python-format ones, and this one the sentence a page
    builds most often."""
    with translation.override("zh-hans"):
        text = translation.gettext(
            "The %(what)s has %(count)s characters; the limit is %(limit)s. Shorten it."
        ) % {"what": "x", "count": 7, "limit": 5}
    assert "7" in text and "5" in text and "characters" not in text
