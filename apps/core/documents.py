"""Documents brought into a prompt: their text, read from the file a person or a program sent,
and the one form in which that text goes into a message.

The form (the README's "Documents in the chat") is each document as a block before the message's
own text, in the order they were attached::

    <document name="notes.md">
    the document's text
    </document>

    the message's own text

PDF text comes through pypdf, HTML through html2text (as Markdown: headings, lists and links
kept, scripts and styles left out); text, Markdown and CSV files are read as UTF-8. Nothing is
cut: a text that does not fit the model is refused by whoever counts its tokens.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from pathlib import PurePath

from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from .errors import ErrorCode, ServiceError, quoted

# The file types a document may have, by extension, with what people call them.
# (The names are translated where they are shown.)
KINDS = {
    ".txt": gettext_noop("text"),
    ".text": gettext_noop("text"),
    ".md": "Markdown",
    ".markdown": "Markdown",
    ".csv": "CSV",
    ".html": "HTML",
    ".htm": "HTML",
    ".pdf": "PDF",
}
ACCEPT = ",".join(KINDS)  # the file input's accept attribute
MAX_NAME = 200


@dataclass(frozen=True)
class DocumentText:
    name: str  # the file's own name, for display (never a path)
    kind: str  # one of KINDS' values
    text: str


def document_name(filename: str) -> str:
    """The name a document is shown and quoted by: the last part of ``filename``, at most
    MAX_NAME characters, without characters that would end the block's name attribute."""
    name = PurePath(filename.replace("\\", "/")).name.strip()
    name = "".join(c for c in name if c.isprintable() and c != '"')
    if len(name) > MAX_NAME:
        stem, dot, extension = name.rpartition(".")
        name = name[: MAX_NAME - len(extension) - 1] + dot + extension if dot else name[:MAX_NAME]
    return name or "document.txt"


def _refused(message: str, param: str) -> ServiceError:
    return ServiceError(ErrorCode.INVALID_PARAMETER, message, param=param)


def document_text(filename: str, data: bytes, *, param: str = "file") -> DocumentText:
    """The text of the file ``filename`` holding ``data``. Raises ServiceError (naming
    ``param``) for a type that is not one of KINDS, a text file that is not UTF-8, a PDF that
    cannot be read or is locked, and a document with no text at all."""
    name = document_name(filename)
    extension = PurePath(name).suffix.lower()
    kind = KINDS.get(extension)
    if kind is None:
        raise _refused(
            _(
                "%(name)s is not a kind of document read here: use a text, Markdown, CSV, "
                "HTML or PDF file (.txt, .md, .csv, .html or .pdf)."
            )
            % {"name": quoted(name)},
            param,
        )
    if kind == "PDF":
        text = _pdf_text(name, data, param)
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise _refused(
                _("%(name)s is not UTF-8 text; save it as UTF-8 and try again.")
                % {"name": quoted(name)},
                param,
            ) from None
        if kind == "HTML":
            text = _html_text(text)
    text = text.replace("\r\n", "\n").replace("\x00", "").strip()
    if not text:
        raise _refused(_("%(name)s has no text in it.") % {"name": quoted(name)}, param)
    return DocumentText(name=name, kind=kind, text=text)


def _html_text(html: str) -> str:
    import html2text

    converter = html2text.HTML2Text()
    converter.body_width = 0  # no hard wrapping: the model reads lines as the page has them
    converter.ignore_images = True
    # It leaves runs of blank lines where block elements meet: one is enough for the model.
    return re.sub(r"\n{3,}", "\n\n", converter.handle(html))


def _pdf_text(name: str, data: bytes, param: str) -> str:
    from pypdf import PdfReader

    # pypdf logs every oddity of a damaged file as a warning; the refusal below says enough.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise _refused(
                _("%(name)s is protected by a password; use an unlocked copy.")
                % {"name": quoted(name)},
                param,
            )
        pages = [page.extract_text() or "" for page in reader.pages]
    except ServiceError:
        raise
    except Exception:  # a damaged file raises errors of many kinds from pypdf's parser
        raise _refused(
            _("%(name)s could not be read as a PDF file.") % {"name": quoted(name)}, param
        ) from None
    text = "\n\n".join(page.strip() for page in pages if page.strip())
    if not text:
        raise _refused(
            _("%(name)s has no text layer (a scanned PDF?): the models here read text only.")
            % {"name": quoted(name)},
            param,
        )
    return text


def with_documents(text: str, documents: list[tuple[str, str]]) -> str:
    """A message's prompt text: each (name, text) document as a block, then ``text``."""
    blocks = [f'<document name="{name}">\n{body}\n</document>' for name, body in documents]
    return "\n\n".join([*blocks, text] if text else blocks)
