"""The chat page in a real browser (Debian's Chromium driven by Playwright) against a live server
process and a real worker with the packaged model."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from apps.accounts.models import User
from apps.chat.services import conversation_create
from apps.inference.models import Generation
from tests.helpers import ROOT

from .conftest import csp_violations, sign_up

ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [
    pytest.mark.model,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("real_worker"),
]


@pytest.fixture
def page(browser, live_server_url, chat_model) -> Iterator[Page]:
    context = browser.new_context(base_url=live_server_url)
    page = context.new_page()
    violations = csp_violations(page)
    sign_up(page, "dana")
    # An empty conversation (the route an empty "new chat" post takes), so that each test can
    # save its settings before its first message.
    conversation = conversation_create(owner=User.objects.get(username="dana"))
    page.goto(f"/chat/{conversation.pk}/")
    expect(page.locator("#chat.connected")).to_be_visible()
    yield page
    context.close()
    assert violations == []


def test_arrival_opens_on_a_composer_and_the_first_message_makes_the_chat(
    browser, live_server_url, chat_model
):
    context = browser.new_context(base_url=live_server_url)
    page = context.new_page()
    violations = csp_violations(page)
    sign_up(page, "erin")
    # Signed in, the page is a composer ready to type in, the default model picked.
    expect(page.locator("#arrival-text")).to_be_focused()
    expect(page.locator("#arrival-model")).to_have_value(chat_model.slug)
    expect(page.locator(".starters button")).to_have_count(4)
    page.keyboard.type("Name the capital of France.")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/chat/[0-9a-f-]{36}/$"))
    expect(page.locator(".message.user .body")).to_have_text("Name the capital of France.")
    # The answer streams in on the page it opened (sampled at the model's defaults: any text
    # will do); Esc stops it there if it is still being written (a no-op once it has ended).
    expect(page.locator(".message.assistant .body")).not_to_be_empty(timeout=30_000)
    expect(page.locator(".conv-item.current")).to_contain_text("Name the capital of France.")
    page.keyboard.press("Escape")
    expect(page.locator(".message.assistant .stats")).to_contain_text("tok/s", timeout=10_000)
    expect(page.locator(".message.assistant .body")).not_to_be_empty()
    # "+ New chat" is the composer again; nothing is made until a message is sent.
    page.click("text=+ New chat")
    expect(page.locator("#arrival-text")).to_be_visible()
    expect(page.locator(".conv-item")).to_have_count(1)
    context.close()
    assert violations == []


def save_settings(page: Page, *, temperature: str, max_tokens: str) -> None:
    page.fill("input[name=temperature]", temperature)
    page.fill("input[name=max_tokens]", max_tokens)
    page.click("text=Save settings")
    expect(page.locator(".settings .saved")).to_have_text("Saved.")


def test_enter_sends_and_the_answer_streams_in(page):
    save_settings(page, temperature="0", max_tokens="40")
    page.fill("#composer-text", "Name the capital of France.")
    page.press("#composer-text", "Shift+Enter")  # a new line, not a send
    expect(page.locator(".message.user")).to_have_count(0)
    page.press("#composer-text", "Enter")
    expect(page.locator(".message.user .body")).to_have_text("Name the capital of France.")
    expect(page.locator(".message.assistant.streaming")).to_have_count(1)
    expect(page.locator("#stop")).to_be_visible()
    expect(page.locator(".message.assistant .stats")).to_contain_text("tok/s", timeout=60_000)
    expect(page.locator(".message.assistant .body")).to_contain_text("Paris")
    expect(page.locator(".conv-item.current")).to_contain_text("Name the capital of France.")
    # A reload shows the stored answer, rendered the same way.
    page.reload()
    expect(page.locator(".message.assistant .body")).to_contain_text("Paris")


def test_stop_keeps_the_partial_answer(page):
    save_settings(page, temperature="0.7", max_tokens="400")
    page.fill("#composer-text", "Write a long story about a dragon who learns to bake.")
    page.press("#composer-text", "Enter")
    expect(page.locator(".message.assistant.streaming .body")).not_to_have_text("", timeout=30_000)
    page.click("#stop")
    stats = page.locator(".message.assistant .stats")
    expect(stats).to_contain_text("stopped", timeout=5_000)
    completion = int(re.search(r"\+ (\d+) completion", stats.inner_text()).group(1))
    assert 0 < completion < 400
    expect(page.locator(".message.assistant .body")).not_to_be_empty()


OTTERS = (
    b"# Sea otters\n\nSea otters live along the coasts of the North Pacific. They float on their "
    b"backs, eat sea urchins and crabs, and hold hands while they sleep so that they do not "
    b"drift apart.\n"
)


def test_a_document_attached_to_a_message_is_read_by_the_model(page):
    """The packaged 135M model answers questions about a short document well; asked for a
    summary of this one it answers "A helpful AI assistant." (its default system prompt), so
    the test asks what only the document says."""
    save_settings(page, temperature="0", max_tokens="24")  # "hands" comes within 17 tokens
    page.set_input_files(
        "#composer .attach-input",
        files=[{"name": "otters.md", "mimeType": "text/markdown", "buffer": OTTERS}],
    )
    chip = page.locator("#composer .document-chip")
    expect(chip).to_contain_text("otters.md")
    expect(chip).to_contain_text(re.compile(r"Markdown · \d+\s*bytes · \d+ tokens"))
    # A file that is not a document is refused where it was attached, and no chip is added.
    page.set_input_files(
        "#composer .attach-input",
        files=[{"name": "deck.pptx", "mimeType": "application/octet-stream", "buffer": b"PK"}],
    )
    expect(page.locator("#composer .attach-error")).to_contain_text("“deck.pptx” is not a kind")
    expect(chip).to_have_count(1)
    page.fill("#composer-text", "What do sea otters hold while they sleep?")
    page.press("#composer-text", "Enter")
    # The message carries the document as a chip (a link to its file) above its text.
    sent = page.locator(".message.user")
    expect(sent.locator(".document-chip a")).to_have_text("otters.md")
    expect(sent.locator(".body")).to_have_text("What do sea otters hold while they sleep?")
    expect(page.locator("#composer .document-chip")).to_have_count(0)
    expect(page.locator(".message.assistant .stats")).to_contain_text("tok/s", timeout=60_000)
    expect(page.locator(".message.assistant .body")).to_contain_text("hands")
    # What the model read: the document's block, then the question.
    [prompt] = Generation.objects.get().messages[-1:]
    assert prompt["content"] == (
        f'<document name="otters.md">\n{OTTERS.decode().strip()}\n</document>\n\n'
        "What do sea otters hold while they sleep?"
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "chat-document-desktop.png", full_page=True)
