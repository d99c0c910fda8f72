"""Fine-tuning and the compare view in Chromium, against a live server, a real training worker and
a real inference worker: the chart grows live without a reload, cancel ends the job, and a reload
draws the same chart again from the stored events."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.helpers import ROOT

from .conftest import csp_violations, evaluate_until, sign_up

pytestmark = [
    pytest.mark.model,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("real_worker", "training_worker"),
]

ARTIFACTS = ROOT / "test-artifacts"
# The training-loss points the chart holds (set each time it draws).
POINTS = "Number(document.querySelector('#loss-chart')?.dataset.points || 0)"


@pytest.fixture
def page(browser, live_server_url, chat_model):
    context = browser.new_context(base_url=live_server_url)
    page = context.new_page()
    violations = csp_violations(page)
    yield page
    context.close()
    assert violations == []


def test_a_job_streams_its_loss_live_and_cancels(page):
    ARTIFACTS.mkdir(exist_ok=True)
    sign_up(page, "erin")
    page.click("nav >> text=Fine-tuning")
    page.click("text=Add the demo dataset")
    expect(page.locator("table.list").first).to_contain_text("mascot-train.jsonl")
    expect(page.locator("#id_suffix")).to_have_value("mascot")  # the demo is preselected
    expect(page.locator("#id_model")).to_have_value("smollm2-135m-instruct")
    page.screenshot(path=ARTIFACTS / "finetuning-index.png", full_page=True)
    # Many small steps: long enough to watch it and to cancel it.
    page.fill("#id_n_epochs", "50")
    page.fill("#id_batch_size", "2")
    page.click("text=Start fine-tuning")
    expect(page.locator("#job-status")).to_have_text("Running", timeout=120_000)
    page.evaluate("window.notReloaded = true")
    evaluate_until(page, f"({POINTS}) >= 4", timeout=60)
    assert page.evaluate("window.notReloaded") is True  # the points came over the WebSocket
    expect(page.locator("#job-eta")).to_contain_text("s left")
    expect(page.locator("#job-log")).to_contain_text("training loss")
    page.screenshot(path=ARTIFACTS / "finetuning-job-running.png", full_page=True)

    page.click("#cancel-form button")
    expect(page.locator("#job-status")).to_have_text("Cancelled", timeout=30_000)
    expect(page.locator("#cancel-form")).to_have_count(0)
    drawn = page.evaluate(POINTS)
    assert drawn >= 4
    page.reload()
    evaluate_until(page, f"({POINTS}) === {drawn}", timeout=5)
    # The chart has its axes, and pointing at it gives a step's loss; the table lists each step.
    chart = page.locator("#loss-chart")
    expect(chart.locator(".u-axis")).to_have_count(2)  # steps and loss (drawn on the canvas)
    over = chart.locator(".u-over")
    box = over.bounding_box()
    over.hover(position={"x": box["width"] * 0.02, "y": box["height"] / 2})
    expect(chart.locator(".u-legend .u-series").nth(1)).to_contain_text(re.compile(r"\d\.\d{3}"))
    page.click("text=The loss as a table")
    expect(page.locator("#loss-table")).to_be_visible()
    assert page.locator("#loss-table tbody tr").count() >= drawn  # eval-only steps add rows
    expect(page.locator("#job-log")).to_contain_text("Cancelled: what was logged is kept")


def test_compare_streams_two_answers_side_by_side(page):
    sign_up(page, "fay")
    page.goto("/chat/compare/")
    # A refused form shows its error in place (htmx swaps 4xx answers here).
    page.fill("#id_text", "Hello")
    page.fill("#id_temperature", "5")
    page.click("text=Send to both")
    expect(page.locator("#compare-result .error")).to_contain_text("temperature")
    page.fill("#id_temperature", "0")
    page.fill("#id_text", "Name the capital of France.")
    page.fill("#id_max_tokens", "24")
    page.click("text=Send to both")
    panes = page.locator(".pane[data-generation]")
    expect(panes).to_have_count(2)
    for index in range(2):
        expect(panes.nth(index)).to_contain_text("Paris", timeout=60_000)
    figures = page.locator(".figures")
    expect(figures.nth(0)).to_contain_text("tokens/s", timeout=60_000)
    expect(figures.nth(1)).to_contain_text("tokens/s", timeout=60_000)
    # Greedy decoding: the same model gives the same answer in both panes.
    assert panes.nth(0).inner_text() == panes.nth(1).inner_text()
    page.screenshot(path=ARTIFACTS / "compare.png", full_page=True)


def test_a_classifier_from_the_demo_file_to_the_classify_tab(page):
    sign_up(page, "gil")
    page.click("nav >> text=Fine-tuning")
    page.click("text=Add the classification demo")
    expect(page.locator("#id_suffix")).to_have_value("intents")  # the demo is preselected
    expect(page.locator("#id_model")).to_have_value("all-minilm-l6-v2")
    page.select_option("#id_method", "head")  # the quickest: a frozen encoder, a trained head
    page.click("text=Start fine-tuning")
    expect(page.locator("#job-status")).to_have_text("Succeeded", timeout=180_000)
    expect(page.locator("#confusion")).to_be_visible()
    expect(page.locator("#classification-metrics")).to_contain_text("Majority class")
    page.screenshot(path=ARTIFACTS / "classifier-job.png", full_page=True)
    page.click("#job-result >> text=Classify")
    page.fill("#id_text", "I was charged twice this month, please refund me")
    page.click("#classify-form button")
    expect(page.locator("#classify-label")).to_have_text("billing", timeout=30_000)
    expect(page.locator(".scores tr")).to_have_count(4)
    page.screenshot(path=ARTIFACTS / "classify.png", full_page=True)
