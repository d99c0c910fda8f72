"""Hostile model output in a real browser: script tags, event handlers, `javascript:` links, HTML
split across streamed chunks and Markdown images pointing at another server. While it streams and
once it is rendered, nothing runs and no request leaves the site.

The worker runs the fake engine, which answers "Echo: <the message>" one word per step, so the
model "says" exactly the payload below, cut into chunks at its spaces (`<img` arrives before
`onerror=...>`), as a model's tokens would cut it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import celery_worker

from .conftest import csp_violations, evaluate_until, sign_up

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def fake_worker(django_db_setup, tmp_path_factory) -> Iterator[None]:
    worker = celery_worker(
        "inference", tmp_path_factory.mktemp("fake-worker"), INFERENCE_ENGINE="fake"
    )
    try:
        yield
    finally:
        worker.stop()


@pytest.fixture
def elsewhere() -> Iterator[tuple[str, list[str]]]:
    """Another server, standing for an attacker's: the paths it was asked for."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server interface
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()


def payload(other: str) -> str:
    return " ".join(
        [
            "<script>window.pwned='script'</script>",
            "<img src=x onerror=\"window.pwned='img'\">",
            "<svg onload=\"window.pwned='svg'\"></svg>",
            "[click me](javascript:window.pwned='link')",
            f"![beacon]({other}/markdown-image.png)",
            f"<img src={other}/html-image.png>",
            f"<iframe src={other}/frame></iframe>",
            f"<a href={other}/x onmouseover=\"window.pwned='hover'\">hover me</a>",
            # Enough words after it that the answer is still streaming when the test looks.
            *["and so on"] * 60,
        ]
    )


@pytest.mark.usefixtures("fake_worker")
def test_hostile_output_stays_inert_while_streaming_and_rendered(
    browser, live_server_url, chat_model, elsewhere
):
    other, hits = elsewhere
    context = browser.new_context(base_url=live_server_url)
    page: Page = context.new_page()
    violations = csp_violations(page)
    left: list[str] = []
    page.on(
        "request",
        lambda request: (
            None if request.url.startswith(live_server_url) else left.append(request.url)
        ),
    )
    sign_up(page, "mallory")
    # The first message, from the arrival composer, opens the conversation as it streams.
    page.fill("#arrival-text", payload(other))
    page.press("#arrival-text", "Enter")
    expect(page.locator("#chat.connected")).to_be_visible()
    streaming = ".message.assistant.streaming .body"
    # Mid-stream: the raw tags are there as text, with no element made of them.
    evaluate_until(
        page,
        f"(document.querySelector({streaming!r})?.textContent || '').includes('and so on')",
        timeout=30,
    )
    assert page.evaluate(f"document.querySelector({streaming!r}).childElementCount") == 0
    expect(page.locator(".message.assistant.streaming")).to_have_count(0, timeout=30_000)

    body = page.locator(".message.assistant .body")
    expect(body).to_contain_text("hover me")
    for message in (body, page.locator(".message.user .body")):
        found = message.evaluate(
            """(node) => ({
                dangerous: node.querySelectorAll('script, img, svg, iframe, object, embed').length,
                handlers: [...node.querySelectorAll('*')].flatMap(
                    (el) => [...el.attributes].map((a) => a.name)).filter((n) => n.startsWith('on')),
                javascriptLinks: [...node.querySelectorAll('[href]')].filter(
                    (el) => el.getAttribute('href').trim().toLowerCase().startsWith('javascript')).length,
            })"""
        )
        assert found == {"dangerous": 0, "handlers": [], "javascriptLinks": 0}
    # Clicking the link and hovering the anchor do nothing either.
    body.get_by_text("click me").click()
    body.get_by_text("hover me").hover()
    page.reload()  # and the stored answer, rendered by the server, is as inert
    expect(page.locator(".message.assistant .body")).to_contain_text("hover me")
    page.wait_for_timeout(500)
    assert page.evaluate("window.pwned === undefined")
    assert left == [] and hits == []
    assert violations == []  # inert by sanitising, not only because the policy blocked it
    context.close()
