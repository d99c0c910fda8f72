from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Playwright's sync API keeps an event loop running in this thread; the tests' own database
    # work is plain synchronous code all the same (the documented pytest-django workaround).
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            yield browser
            browser.close()
    finally:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


def sign_up(page: Page, username: str) -> None:
    page.goto("/accounts/signup/")
    page.fill("#id_username", username)
    page.fill("#id_password1", "a-long-passphrase-42")
    page.fill("#id_password2", "a-long-passphrase-42")
    page.click("main button[type=submit]")
    expect(page.locator(".who")).to_have_text(username)


def csp_violations(page: Page) -> list[str]:
    """The Content-Security-Policy violations the page reports from now on (a list that fills);
    a page fixture asserts it empty at the end: the policy must not break the app."""
    found: list[str] = []
    page.on(
        "console",
        lambda message: (
            found.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return found


def evaluate_until(page: Page, expression: str, *, timeout: float) -> None:
    """Wait until ``expression`` is true in the page. Playwright's ``wait_for_function`` runs its
    predicate through eval, which the site's Content-Security-Policy forbids; ``evaluate`` goes
    through the DevTools protocol instead."""
    import time

    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"{expression} not true within {timeout} s")
        time.sleep(0.1)
