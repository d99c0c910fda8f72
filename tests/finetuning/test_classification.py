"""A text classifier from a labelled file to a served model, in the production shape: the demo CSV
through the official client, a real training worker fine-tuning all-MiniLM-L6-v2, honest metrics
beside the baselines, and `/v1/classifications` answered by a real inference worker."""

from __future__ import annotations

import re

import httpx
import openai
import pytest
from django.test import Client
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from apps.finetuning.models import FineTuningJob
from apps.inference.models import UsageRecord

from .conftest import DEMO
from .test_training import client_for, wait_for_job

pytestmark = [
    pytest.mark.model,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("real_worker", "training_worker"),
]

FINISHED = {"succeeded", "failed", "cancelled"}


def page_numbers(html: str, table_id: str) -> list[list[str]]:
    table = re.search(rf'<table[^>]*id="{table_id}".*?</table>', html, re.S).group(0)
    body = table.split("<tbody>")[1]
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in body.split("</tr>") if "<td" in row]


def test_a_classifier_beats_the_baselines_and_serves(live_server_url, owner, stranger, chat_model):
    api = client_for(live_server_url, owner)
    upload = api.files.create(
        file=("support-intents.csv", (DEMO / "support-intents.csv").read_bytes()),
        purpose="fine-tune",
    )
    job = api.fine_tuning.jobs.create(
        model="all-minilm-l6-v2",
        training_file=upload.id,
        suffix="intents",
        extra_body={"method": {"type": "full"}},
    )
    job = wait_for_job(api, job.id, FINISHED, timeout=300)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model.startswith("ft:all-minilm-l6-v2:intents:")
    row = FineTuningJob.objects.get(owner=owner)
    assert row.kind == "classification"
    evaluation = row.evaluation
    test, majority = evaluation["test"], evaluation["baselines"]["majority"]
    assert test["accuracy"] >= majority["accuracy"] + 0.4, (test, majority)
    assert test["macro_f1"] > evaluation["baselines"]["tfidf_logreg"]["macro_f1"] - 0.1

    # The figures on the job page are the ones scikit-learn computes from the stored predictions.
    labels = evaluation["labels"]
    truth = [p["label"] for p in evaluation["predictions"]]
    predicted = [p["predicted"] for p in evaluation["predictions"]]
    assert len(truth) == evaluation["splits"]["test"] > 0
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=labels, zero_division=0
    )
    site = Client()
    site.force_login(owner)
    html = site.get(f"/finetuning/jobs/{row.pk}/").content.decode()
    metrics = {r[0]: r[1] for r in page_numbers(html, "classification-metrics")}
    assert metrics == {
        "Accuracy": f"{accuracy_score(truth, predicted):.3f}",
        "Macro precision": f"{precision.mean():.3f}",
        "Macro recall": f"{recall.mean():.3f}",
        "Macro F1": f"{f1.mean():.3f}",
    }
    per_label = page_numbers(html, "per-label")
    assert per_label == [
        [label, f"{p:.3f}", f"{r:.3f}", f"{f:.3f}", str(s)]
        for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
    ]
    confusion = [[int(n) for n in r] for r in page_numbers(html, "confusion")]
    assert confusion == confusion_matrix(truth, predicted, labels=labels).tolist()

    # Served through the API, metered, and the owner's alone.
    response = httpx.post(
        f"{live_server_url}/v1/classifications",
        headers={"Authorization": f"Bearer {api.api_key}"},
        json={
            "model": job.fine_tuned_model,
            "input": ["I was billed twice for my subscription", "Please add a dark mode"],
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [d["label"] for d in body["data"]] == ["billing", "feature_request"]
    assert set(body["data"][0]["scores"]) == set(labels)
    assert abs(sum(body["data"][0]["scores"].values()) - 1) < 1e-4
    usage = UsageRecord.objects.get(kind="classification")
    assert usage.prompt_tokens == body["usage"]["prompt_tokens"] > 0

    other = client_for(live_server_url, stranger)
    refused = httpx.post(
        f"{live_server_url}/v1/classifications",
        headers={"Authorization": f"Bearer {other.api_key}"},
        json={"model": job.fine_tuned_model, "input": "hello"},
        timeout=60,
    )
    assert refused.status_code == 404
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.retrieve(job.id)
    site.force_login(stranger)
    assert site.get(f"/finetuning/jobs/{row.pk}/").status_code == 404
    attempt = site.post("/chat/classify/", {"model": job.fine_tuned_model, "text": "hello"})
    assert attempt.status_code == 404
    assert UsageRecord.objects.filter(user=stranger).count() == 0

    # The playground tab, for its owner.
    site.force_login(owner)
    answer = site.post(
        "/chat/classify/", {"model": job.fine_tuned_model, "text": "I cannot log in"}
    ).content.decode()
    assert '<strong id="classify-label">account_access</strong>' in answer
