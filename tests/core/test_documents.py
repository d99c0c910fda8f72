"""The text of documents, read from each kind of file the chat and the API take, and the form
that text has in a prompt."""

from __future__ import annotations

import io

import pytest
from pypdf import PdfReader, PdfWriter

from apps.core.documents import document_name, document_text, with_documents
from apps.core.errors import ErrorCode, ServiceError
from tests.documents import text_pdf


def refusal(filename: str, data: bytes) -> str:
    with pytest.raises(ServiceError) as refused:
        document_text(filename, data)
    assert (refused.value.code, refused.value.param) == (ErrorCode.INVALID_PARAMETER, "file")
    return refused.value.message


@pytest.mark.parametrize(
    ("filename", "data", "kind", "text"),
    [
        ("notes.txt", b"\xef\xbb\xbfLine one\r\nLine two\n\n", "text", "Line one\nLine two"),
        ("README.md", "# Title\n\n- café\n".encode(), "Markdown", "# Title\n\n- café"),
        ("table.CSV", b"name,legs\notter,4\n", "CSV", "name,legs\notter,4"),
    ],
)
def test_text_files_are_read_as_utf8(filename, data, kind, text):
    document = document_text(filename, data)
    assert (document.name, document.kind, document.text) == (filename, kind, text)


def test_html_becomes_markdown_without_scripts_or_styles():
    html = (
        b"<html><head><style>p{color:red}</style><script>alert('x')</script></head><body>"
        b"<h1>Otters</h1><p>They <b>hold</b> hands.</p><ul><li>rivers</li><li>seas</li></ul>"
        b'<p><a href="https://example.org/otters">More</a></p></body></html>'
    )
    document = document_text("page.html", html)
    assert document.kind == "HTML"
    assert document.text == (
        "# Otters\n\nThey **hold** hands.\n\n  * rivers\n  * seas\n\n"
        "[More](https://example.org/otters)"
    )


def test_pdf_text_comes_page_by_page_and_skips_pages_without_text():
    data = text_pdf([["Otters hold hands (asleep).", "Second line."], [], ["Page three."]])
    document = document_text("paper.pdf", data)
    assert document.kind == "PDF"
    assert document.text == "Otters hold hands (asleep).\nSecond line.\n\nPage three."


def test_files_that_are_not_documents_are_refused_by_name():
    assert refusal("report.docx", b"PK\x03\x04") == (
        "“report.docx” is not a kind of document read here: use a text, Markdown, CSV, HTML or "
        "PDF file (.txt, .md, .csv, .html or .pdf)."
    )
    assert refusal("latin1.txt", "café".encode("latin-1")) == (
        "“latin1.txt” is not UTF-8 text; save it as UTF-8 and try again."
    )
    assert refusal("empty.md", b" \n\n ") == "“empty.md” has no text in it."
    assert refusal("broken.pdf", b"%PDF-1.4 not really") == (
        "“broken.pdf” could not be read as a PDF file."
    )
    assert refusal("scan.pdf", text_pdf([[], []])) == (
        "“scan.pdf” has no text layer (a scanned PDF?): the models here read text only."
    )


def test_a_pdf_locked_by_a_password_is_refused():
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(text_pdf([["Secret plans."]]))))
    writer.encrypt("hunter2")
    locked = io.BytesIO()
    writer.write(locked)
    assert refusal("locked.pdf", locked.getvalue()) == (
        "“locked.pdf” is protected by a password; use an unlocked copy."
    )


def test_names_are_the_files_own_and_cannot_end_the_block():
    assert document_name("C:\\Users\\me\\notes.txt") == "notes.txt"
    assert document_name("../../etc/passwd.md") == "passwd.md"
    assert document_name('say "hi"\n.txt') == "say hi.txt"
    long = document_name("x" * 300 + ".pdf")
    assert len(long) == 200 and long.endswith(".pdf")
    assert document_name("") == "document.txt"


def test_documents_go_before_the_text_each_in_its_block():
    assert with_documents("Compare them.", [("a.md", "Alpha"), ("b.txt", "Beta\nGamma")]) == (
        '<document name="a.md">\nAlpha\n</document>\n\n'
        '<document name="b.txt">\nBeta\nGamma\n</document>\n\n'
        "Compare them."
    )
    assert with_documents("", [("a.md", "Alpha")]) == '<document name="a.md">\nAlpha\n</document>'
    assert with_documents("Just text.", []) == "Just text."
