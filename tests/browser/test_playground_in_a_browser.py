"""The playground as people use it, in Chromium against a live server and a real worker with the
packaged model: streaming, conversations (search, rename, pin, delete and undo, export, import),
messages (edit and resend, copy, highlighted code, scrolling), completion mode and presets,
reproducible answers, keyboard, phone and desktop widths, light and dark themes. Screenshots of
the main pages at both widths go to test-artifacts/.

Conversations that a test only manages (not chats with the model) are written to the database
directly, for the account the browser signed up, to keep the model's time for what needs it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.utils import translation
from playwright.sync_api import Page, expect

from apps.accounts.models import User
from apps.chat.models import Conversation, Preset
from apps.chat.presets import register_shipped_presets
from tests.factories import ConversationFactory, answered_turn
from tests.helpers import ROOT

from .conftest import csp_violations, evaluate_until, sign_up

pytestmark = [
    pytest.mark.model,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("real_worker"),
]

ARTIFACTS = ROOT / "test-artifacts"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 900}


@pytest.fixture
def page(browser, live_server_url, chat_model, request) -> Iterator[Page]:
    register_shipped_presets(Preset)  # transactional tests flush the migration's rows
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(base_url=live_server_url, viewport=DESKTOP)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server_url)
    page = context.new_page()
    violations = csp_violations(page)
    sign_up(page, request.node.name[5:25].replace("_", ""))
    yield page
    context.close()
    assert violations == []


def me(page: Page) -> User:
    return User.objects.get(username=page.locator(".who").inner_text())


def conversation_with(
    user: User, title: str, turns: list[tuple[str, str]], **settings: object
) -> Conversation:
    """A conversation of ``user`` with finished (question, answer) turns."""
    conversation = ConversationFactory(owner=user, title=title, **settings)
    for question, answer in turns:
        answered_turn(
            conversation,
            question,
            answer,
            params={"temperature": 0.0, "max_tokens": 64, "seed": 1},
            completion_tokens=len(answer.split()),
        )
    return conversation


def open_chat(page: Page, conversation: Conversation) -> None:
    page.goto(f"/chat/{conversation.pk}/")
    expect(page.locator("#chat.connected")).to_be_visible()


def send(page: Page, text: str) -> None:
    page.fill("#composer-text", text)
    page.press("#composer-text", "Enter")


def answered(page: Page, *, count: int = 1) -> None:
    expect(page.locator(".message.assistant .stats")).to_have_count(count, timeout=90_000)


def last_generation(page: Page) -> str:
    return page.locator(".message.assistant").last.get_attribute("data-generation") or ""


def new_answer(page: Page, before: str) -> None:
    """Wait for the last answer to be another generation than ``before``, and finished."""
    evaluate_until(
        page,
        "(() => { const m = [...document.querySelectorAll('.message.assistant')].pop();"
        f" return m && m.dataset.generation !== {before!r} && !!m.querySelector('.stats'); }})()",
        timeout=90,
    )


def test_tokens_stream_in_progressively_and_regenerate_replaces_the_answer(page):
    chat = conversation_with(me(page), "", [], temperature=0.7, max_tokens=60)
    open_chat(page, chat)
    send(page, "Tell me about the sea in three sentences.")
    # Sample the answer while it streams: it must grow in several steps, not arrive at once.
    lengths: list[int] = []
    deadline = time.monotonic() + 90
    body = ".message.assistant .body"
    while time.monotonic() < deadline:
        streaming, length = page.evaluate(
            f"""() => [!!document.querySelector('.message.assistant.streaming'),
                       (document.querySelector({body!r})?.textContent || '').length]"""
        )
        lengths.append(length)
        if not streaming and length:
            break
        time.sleep(0.05)
    growth = sorted({n for n in lengths if n})
    assert len(growth) >= 4, lengths  # seen at four or more lengths on the way
    answered(page)
    first = page.locator(body).inner_text()

    before = last_generation(page)
    page.click("#regenerate")
    new_answer(page, before)
    expect(page.locator(".message.assistant")).to_have_count(1)  # replaced, not added
    expect(page.locator(".message.user")).to_have_count(1)
    assert page.locator(body).inner_text().strip() and first.strip()
    page.screenshot(path=ARTIFACTS / "chat-desktop.png", full_page=True)


def test_conversations_search_rename_pin_delete_undo_export_and_import(page, tmp_path):
    user = me(page)
    trip = conversation_with(user, "Holiday plans", [("Where in May?", "Try Lisbon in May.")])
    conversation_with(user, "Python help", [("Sort a dict?", "Use `sorted(d.items())`.")])
    page.goto("/chat/")
    items = page.locator("#conversation-list .conv-item")
    expect(items).to_have_count(2)

    # Search by title and by content (an answer's text), as you type.
    page.fill("#search", "lisbon")
    expect(items).to_have_count(1)
    expect(items.first).to_contain_text("Holiday plans")
    page.fill("#search", "python")
    expect(items).to_have_count(1)
    expect(items.first).to_contain_text("Python help")
    page.fill("#search", "")
    expect(items).to_have_count(2)

    # Rename and pin: the pinned one heads the list, and the button says so.
    page.click("text=Holiday plans")
    expect(page.locator("#chat.connected")).to_be_visible()
    page.fill(".rename input[name=title]", "Lisbon trip")
    page.click(".rename button")
    expect(page.locator(".conv-item.current")).to_contain_text("Lisbon trip")
    expect(items.first).to_contain_text("Python help")  # the most recently active
    page.click("#pin-button")
    expect(page.locator("#pin-button")).to_have_text("Unpin")
    expect(items.first).to_contain_text("Lisbon trip")

    # Export: Markdown to read, JSON to import.
    with page.expect_download() as markdown:
        page.click("text=Export Markdown")
    text = Path(markdown.value.path()).read_text(encoding="utf-8")
    assert text.startswith("# Lisbon trip") and "Try Lisbon in May." in text
    with page.expect_download() as exported:
        page.click("text=Export JSON")
    saved = tmp_path / "lisbon.json"
    exported.value.save_as(saved)
    assert json.loads(saved.read_text())["messages"][1]["content"] == "Try Lisbon in May."

    # Delete, then undo.
    page.click("button.danger")
    expect(page.locator(".toast")).to_contain_text("Deleted “Lisbon trip”")
    expect(items).to_have_count(1)
    page.click(".toast .undo")
    expect(page).to_have_url(f"/chat/{trip.pk}/")
    expect(items).to_have_count(2)

    # Import the JSON export: a new conversation with the same turns. A bad file says why.
    page.goto("/chat/")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    page.set_input_files("#import-form input[type=file]", str(bad))
    page.click("#import-form button")
    expect(page.locator("#import-form .error")).to_contain_text("Not a conversation export")
    page.set_input_files("#import-form input[type=file]", str(saved))
    page.click("#import-form button")
    expect(page.locator(".message.assistant .body")).to_have_text("Try Lisbon in May.")
    expect(items).to_have_count(3)
    page.screenshot(path=ARTIFACTS / "conversations-desktop.png", full_page=True)


def test_edit_and_resend_copy_highlighted_code_and_scrolling(page):
    user = me(page)
    code = "```python\ndef greet(name):\n    return f'Hello {name}'\n```"
    turns = [(f"Question {i}", f"Answer {i}. " + "Some words. " * 30) for i in range(6)]
    chat = conversation_with(
        user, "Long", [("Show me code", code), *turns], temperature=0, max_tokens=120
    )
    open_chat(page, chat)

    # Highlighted code with its own copy button; a message's copy button.
    block = page.locator(".message.assistant pre").first
    expect(block.locator(".hljs-keyword")).to_have_text(["def", "return"])
    block.locator(".copy-code").click()
    expect(block.locator(".copy-code")).to_have_text("Copied")
    clipboard = page.evaluate("navigator.clipboard.readText()")
    assert clipboard.strip() == "def greet(name):\n    return f'Hello {name}'"
    page.locator(".message.user .copy").first.click()
    assert page.evaluate("navigator.clipboard.readText()") == "Show me code"

    # A long answer streaming: the thread follows its end...
    send(page, "Count from 1 to 100, separated by commas.")
    expect(page.locator(".message.assistant.streaming")).to_have_count(1)
    distances = []
    for _ in range(15):  # measured after the page has drawn the latest text (two frames)
        time.sleep(0.1)
        distances.append(
            page.evaluate(
                "new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(() => {"
                " const t = document.getElementById('thread');"
                " done(t.scrollHeight - t.scrollTop - t.clientHeight); })))"
            )
        )
    assert max(distances) < 40, distances
    # ...until the reader scrolls up; then it stays where they put it.
    page.evaluate("document.getElementById('thread').scrollTop = 0")
    time.sleep(0.8)
    assert page.evaluate("document.getElementById('thread').scrollTop") < 50
    answered(page, count=8)

    # Edit the first question: everything after it is replaced by the new answer.
    page.locator(".message.user .edit").first.click()
    page.fill(".edit-box textarea", "Name the capital of France.")
    page.click("text=Save and resend")
    expect(page.locator(".message.user")).to_have_count(1)
    expect(page.locator(".message.user .body")).to_have_text("Name the capital of France.")
    answered(page)
    expect(page.locator(".message.assistant .body")).to_contain_text("Paris")
    page.reload()
    expect(page.locator(".message")).to_have_count(2)


def test_completion_mode_presets_and_running_an_answer_again(page):
    # Completion mode: a raw prompt continued, streaming, with the seed to run it again.
    page.goto("/chat/complete/")
    page.fill("#id_prompt", "The three primary colours are")
    page.fill("#id_temperature", "1.0")
    page.fill("#id_max_tokens", "20")
    page.click("text=Continue the text")
    continuation = page.locator(".continuation")
    expect(page.locator(".figures")).to_contain_text("tokens/s", timeout=60_000)
    first = continuation.inner_text()
    assert first.strip()
    expect(page.locator(".stats")).to_contain_text("smollm2-135m-instruct@")
    expect(page.locator(".stats")).to_contain_text("seed ")
    page.screenshot(path=ARTIFACTS / "complete-run-desktop.png", full_page=True)
    before = continuation.get_attribute("data-generation")
    page.click(".again button.rerun")
    evaluate_until(
        page,
        f"document.querySelector('.continuation').dataset.generation !== {before!r}"
        " && document.querySelector('.figures').textContent.includes('tokens/s')",
        timeout=60,
    )
    assert continuation.inner_text() == first  # sampled at temperature 1, the same seed

    # Presets: a shipped one fills the settings; the settings saved as one of your own.
    chat = conversation_with(me(page), "Presets", [], temperature=1.0, max_tokens=24)
    open_chat(page, chat)
    page.select_option(".preset-apply select", label="Translate (built in)")
    page.click("text=Apply preset")
    expect(page.locator(".settings .saved")).to_have_text("Applied Translate.")
    expect(page.locator("textarea[name=system_prompt]")).to_have_value(
        Preset.objects.get(owner=None, name="Translate").system_prompt
    )
    page.fill("input[name=max_tokens]", "24")
    page.fill("input[name=temperature]", "1.0")
    page.click("text=Save settings")
    expect(page.locator(".settings .saved")).to_have_text("Saved.")
    page.fill(".preset-save input[name=name]", "French, lively")
    page.click("text=Save preset")
    expect(page.locator(".settings .saved")).to_have_text("Saved as preset French, lively.")
    expect(page.locator(".preset-apply select")).to_contain_text("French, lively")

    # A sampled chat answer shows its version, parameters and seed, and runs again the same.
    send(page, "Good morning, how are you?")
    answered(page)
    stats = page.locator(".message.assistant .stats")
    expect(stats).to_contain_text("temperature 1.0")
    expect(stats).to_contain_text("seed ")
    answer = page.locator(".message.assistant .body").inner_text()
    before = last_generation(page)
    page.click(".message.assistant .rerun")
    new_answer(page, before)
    assert page.locator(".message.assistant .body").inner_text() == answer


def test_keyboard_themes_phone_and_inline_errors(page):
    chat = conversation_with(me(page), "Keys", [("Hi", "Hello!")], temperature=0.7, max_tokens=300)
    open_chat(page, chat)
    # Keyboard: Ctrl+K searches, Tab reaches Attach then Send from the message box, Escape
    # stops an answer.
    page.keyboard.press("Control+k")
    assert page.evaluate("document.activeElement.id") == "search"
    page.focus("#composer-text")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "attach-input"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "send"
    send(page, "Write a long story about a lighthouse keeper.")
    expect(page.locator(".message.assistant.streaming .body")).not_to_be_empty(timeout=60_000)
    page.keyboard.press("Escape")
    expect(page.locator(".message.assistant .stats").last).to_contain_text(
        "stopped", timeout=10_000
    )
    # Errors in words, in place.
    page.click("#send")
    expect(page.locator("#chat-error")).to_have_text("Type a message first.")

    # Themes: the system's by default; the toggle overrides it and is remembered.
    background = "getComputedStyle(document.body).backgroundColor"
    page.emulate_media(color_scheme="dark")
    dark = page.evaluate(background)
    page.emulate_media(color_scheme="light")
    light = page.evaluate(background)
    assert dark != light
    page.screenshot(path=ARTIFACTS / "chat-desktop-light.png")
    page.click("[data-theme-toggle]")
    assert page.evaluate(background) == dark
    page.reload()
    assert page.evaluate(background) == dark
    page.screenshot(path=ARTIFACTS / "chat-desktop-dark.png")
    page.click("[data-theme-toggle]")
    assert page.evaluate(background) == light

    # A phone: one column, nothing wider than the screen, the list and settings on demand.
    page.set_viewport_size(PHONE)
    page.reload()
    expect(page.locator("#chat.connected")).to_be_visible()
    overflow = "document.documentElement.scrollWidth - window.innerWidth"
    assert page.evaluate(overflow) <= 0
    expect(page.locator("#composer-text")).to_be_visible()
    expect(page.locator("#sidebar")).to_be_hidden()
    page.click(".chat-head [data-toggle=show-sidebar]")
    expect(page.locator("#sidebar")).to_be_visible()
    page.screenshot(path=ARTIFACTS / "chat-phone-conversations.png")
    page.click("#sidebar .close")
    expect(page.locator("#sidebar")).to_be_hidden()
    page.click(".chat-head [data-toggle=show-panel]")
    expect(page.locator("#panel")).to_be_visible()
    page.click("#panel .close")
    expect(page.locator("#panel")).to_be_hidden()
    page.screenshot(path=ARTIFACTS / "chat-phone.png", full_page=True)


def test_the_usage_chart_has_axes_and_shows_a_days_values_on_hover(page, chat_model):
    from django.utils import timezone

    from apps.inference.models import UsageRecord

    today = timezone.now().date().isoformat()
    UsageRecord.objects.create(
        user=me(page),
        model=chat_model,
        source="chat",
        kind="chat",
        prompt_tokens=1200,
        completion_tokens=34,
    )
    page.goto("/accounts/usage/")
    chart = page.locator("#usage-chart")
    expect(chart).to_have_attribute("data-points", "30")
    expect(chart.locator(".u-axis")).to_have_count(2)  # days and tokens (drawn on the canvas)
    # The last bar is today's: point at it and the legend gives the day and its figures.
    over = chart.locator(".u-over")
    box = over.bounding_box()
    over.hover(position={"x": box["width"] - 3, "y": box["height"] - 5})
    legend = chart.locator(".u-legend")
    expect(legend).to_contain_text(today)
    expect(legend).to_contain_text("1,234 tokens")
    expect(legend).to_contain_text("1,200")
    # The same figures are in the table beside it.
    expect(page.locator("#usage-days")).to_contain_text("1234")


def test_the_language_switch_in_the_top_bar(page):
    """中文 in the top bar turns the site Chinese, for this account wherever it signs in, and
    English turns it back."""
    page.goto("/chat/")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.click(".language-switch button")
    expect(page).to_have_url(re.compile(r"/chat/$"))
    expect(page.locator("html")).to_have_attribute("lang", "zh-hans")
    expect(page.locator(".arrival h1")).to_have_text(chinese("What would you like to ask?"))
    expect(page.locator("#arrival-send")).to_have_text(chinese("Send"))
    expect(page.locator(".language-switch button")).to_have_text("English")
    # The account keeps it: signed out and in again, with the cookie gone, still Chinese.
    name = page.locator(".who").inner_text()
    page.click(f"text={chinese('Log out')}")
    page.context.clear_cookies()
    page.goto("/accounts/login/")
    expect(page.locator("html")).to_have_attribute("lang", "en")  # the browser asks for English
    page.fill("#id_username", name)
    page.fill("#id_password", "a-long-passphrase-42")
    page.click("main button[type=submit]")
    expect(page.locator("html")).to_have_attribute("lang", "zh-hans")
    # The scripts speak it too: the theme button's label comes from the JavaScript catalogue.
    expect(page.locator("[data-theme-toggle]")).to_have_text(
        re.compile(f"{chinese_js('Dark theme')}|{chinese_js('Light theme')}")
    )
    page.click(".language-switch button")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator(".arrival h1")).to_have_text("What would you like to ask?")


def chinese(text: str) -> str:
    with translation.override("zh-hans"):
        translated = translation.gettext(text)
    assert translated != text
    return translated


def chinese_js(text: str) -> str:
    """``text`` as the JavaScript catalogue (djangojs) has it in Chinese."""
    from django.utils.translation.trans_real import DjangoTranslation

    translated = DjangoTranslation("zh-hans", domain="djangojs").gettext(text)
    assert translated != text
    return translated


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_screenshots_of_the_main_pages(page, language):
    """Each main page at a phone's width and a desktop's, in English and in Chinese, for people
    to look at; each must fit its width (no sideways scrolling)."""
    if language != "en":
        page.goto("/chat/")
        page.click(".language-switch button")
        expect(page.locator("html")).to_have_attribute("lang", language)
    chat = conversation_with(
        me(page),
        "Shapes of code",
        [
            ("How do I reverse a list in Python?", "Use slicing:\n\n```python\nitems[::-1]\n```"),
            ("And in place?", "Call `items.reverse()`; it returns **None**."),
        ],
    )
    pages = {
        "chat": f"/chat/{chat.pk}/",
        "chat-index": "/chat/",
        "complete": "/chat/complete/",
        "compare": "/chat/compare/",
        "keys": "/accounts/keys/",
        "usage": "/accounts/usage/",
        "finetuning": "/finetuning/",
        "evals": "/evals/",
        "api-docs": "/docs/api/",
    }
    for size, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
        page.set_viewport_size(viewport)
        for name, path in pages.items():
            page.goto(path)
            if name == "chat":
                expect(page.locator("#chat.connected")).to_be_visible()
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, (name, size, language, overflow)
            expect(page.locator("html")).to_have_attribute("lang", language)
            page.screenshot(path=ARTIFACTS / f"{name}-{language}-{size}.png", full_page=True)
    evaluate_until(page, "document.readyState === 'complete'", timeout=5)
