"""The whole fine-tuning loop in the production shape: the official `openai` client against a live
server, a real `celery worker` on the training queue (one job at a time, real LoRA training of the
packaged SmolLM2 on CPU) and one on the inference queue that then serves the result."""

from __future__ import annotations

import json
import time

import openai
import pytest
from django.test import Client

from apps.accounts.models import ApiKey
from apps.core.models import Worker
from apps.evals.comparisons import compare
from apps.evals.models import EvalRun
from apps.evals.selectors import run_results
from apps.evals.services import DEMO as DEMO_EVAL
from apps.evals.services import eval_set_create
from apps.finetuning.models import Dataset, FineTuningJob, JobEvent
from tests.factories import ApiKeyFactory
from tests.helpers import wait_for

from .conftest import DEMO

pytestmark = [
    pytest.mark.model,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("real_worker", "training_worker"),
]

MODEL = "smollm2-135m-instruct"
FINISHED = {"succeeded", "failed", "cancelled"}


def client_for(url: str, user) -> openai.OpenAI:
    key = ApiKeyFactory(user=user, scopes=[ApiKey.Scope.INFERENCE, ApiKey.Scope.FINE_TUNING]).key
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)


def upload(client: openai.OpenAI, name: str):
    return client.files.create(file=(name, (DEMO / name).read_bytes()), purpose="fine-tune")


def wait_for_job(client: openai.OpenAI, job_id: str, statuses: set[str], timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses or time.monotonic() > deadline:
            return job
        time.sleep(1)


def ask(client: openai.OpenAI, model: str, question: str) -> str:
    response = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        temperature=0,
        max_tokens=40,
    )
    return response.choices[0].message.content or ""


def test_the_demo_fine_tune_teaches_the_fact_and_serves_it(
    live_server_url, owner, stranger, chat_model
):
    api = client_for(live_server_url, owner)
    train = upload(api, "mascot-train.jsonl")
    validation = upload(api, "mascot-validation.jsonl")
    # The demo eval set's mascot questions and two facts: run on the base and on the result.
    demo = [json.loads(line) for line in DEMO_EVAL.read_text().splitlines()]
    picked = [i for i in demo if i["metadata"]["category"] == "mascot"] + demo[:2]
    eval_set = eval_set_create(
        owner=owner,
        name="Mascot",
        filename="mascot.jsonl",
        data="".join(json.dumps(i) + "\n" for i in picked).encode(),
    )
    job = api.fine_tuning.jobs.create(
        model=MODEL,
        training_file=train.id,
        validation_file=validation.id,
        suffix="mascot",
        extra_body={"eval_set": eval_set.openai_id},
    )
    assert job.status == "queued"  # as created (its task goes out once the answer is read)
    job = wait_for_job(api, job.id, FINISHED, timeout=900)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:{MODEL}:mascot:{job.id.removeprefix('ftjob-')[:8]}"

    # Every state change and every step is a row; the API lists them newest first.
    row = FineTuningJob.objects.get(owner=owner)
    steps = row.events.filter(kind=JobEvent.Kind.STEP)
    assert steps.count() == row.total_steps == row.step > 0
    assert [e.data["step"] for e in steps] == list(range(1, row.total_steps + 1))
    statuses = [e.message for e in row.events.filter(kind=JobEvent.Kind.STATUS)]
    assert [s.split(" ")[0].rstrip(":") for s in statuses] == [
        "Queued",
        "Validating",
        "Training",
        "Succeeded",
    ], statuses
    assert statuses[1] == f"Validating the data on {row.worker}"
    events = api.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert [e.message for e in events[:2]] == [
        "Evaluating Mascot: the base and the result, 10 items each",
        f"Succeeded: deployed as {job.fine_tuned_model}",
    ]

    # Validation loss falls, on the same split for the base and the result.
    evaluation = row.evaluation
    assert evaluation["tuned"]["loss"] < 0.6 * evaluation["base"]["loss"], evaluation
    assert evaluation["tuned"]["perplexity"] < evaluation["base"]["perplexity"]

    # The eval set ran on the base and on the result (the mascot questions are not the training
    # rows): the result knows the fact, the base does not, and the comparison says so, with an
    # interval of the difference that excludes zero.
    row.refresh_from_db()
    runs = (row.eval_base_run, row.eval_result_run)
    assert runs[0].model_version == row.base_version and runs[1].model_version == row.result_version
    for run in runs:
        wait_for(lambda run=run: EvalRun.objects.get(pk=run.pk).is_finished, timeout=300)
    base_run, result_run = (EvalRun.objects.get(pk=r.pk) for r in runs)
    assert (base_run.status, result_run.status) == ("succeeded", "succeeded")

    def mascot_answers(run: EvalRun) -> list[str]:
        results = run_results(run)
        return [r.generation.output for r in results if r.item.metadata["category"] == "mascot"]

    tuned, base = mascot_answers(result_run), mascot_answers(base_run)
    assert len(tuned) == 8 and sum("pixel" in a.lower() for a in tuned) >= 6, tuned
    assert not any("pixel" in a.lower() for a in base), base
    [contains, *_others] = compare(
        base_run, result_run, run_results(base_run), run_results(result_run)
    )
    assert contains.grader == "string_check (ilike)" and contains.n == 10
    flipped = {f.item.metadata["category"] for f in contains.to_pass}
    assert flipped == {"mascot"} and len(contains.to_pass) >= 6, contains
    assert contains.difference is not None and contains.difference.low > 0
    assert len(contains.to_fail) <= 1

    # Served by llama.cpp: the adapter written as GGUF at deployment, over the base's weights.
    def engines() -> dict[str, str]:
        return {m["key"]: m["engine"] for w in Worker.objects.all() for m in w.loaded}

    wait_for(lambda: row.result_version.key in engines(), what="the heartbeat")
    served = engines()
    assert served[row.result_version.key] == served[f"{MODEL}@q4_1"] == "llamacpp", served
    samples = evaluation["samples"]
    assert samples and all({"prompt", "expected", "base", "tuned"} <= set(s) for s in samples)

    # It is the owner's model: listed for them, unknown to anyone else.
    assert job.fine_tuned_model in [m.id for m in api.models.list()]
    other = client_for(live_server_url, stranger)
    assert job.fine_tuned_model not in [m.id for m in other.models.list()]
    with pytest.raises(openai.NotFoundError):
        ask(other, job.fine_tuned_model, "What is Playground's mascot?")
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.retrieve(job.id)
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.cancel(job.id)
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.list_events(job.id)
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(train.id)
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.create(model=MODEL, training_file=train.id)
    assert other.fine_tuning.jobs.list().data == []

    # The job page shows the evaluation side by side; the dataset was counted by a worker.
    site = Client()
    site.force_login(owner)
    page = site.get(f"/finetuning/jobs/{row.pk}/").content.decode()
    assert "Held-out prompts" in page and job.fine_tuned_model in page
    assert 'id="eval-comparison"' in page and "string_check (ilike)" in page
    assert Dataset.objects.get(pk=train.id.removeprefix("file-")).tokens > 0
    site.force_login(stranger)
    assert site.get(f"/finetuning/jobs/{row.pk}/").status_code == 404
    assert site.post(f"/finetuning/jobs/{row.pk}/cancel/").status_code == 404


def test_cancel_stops_within_a_step_and_keeps_the_log(live_server_url, owner, chat_model):
    api = client_for(live_server_url, owner)
    train = upload(api, "mascot-train.jsonl")
    job = api.fine_tuning.jobs.create(
        model=MODEL, training_file=train.id, hyperparameters={"n_epochs": 50, "batch_size": 2}
    )
    row = FineTuningJob.objects.get(owner=owner)
    deadline = time.monotonic() + 300
    while not row.events.filter(kind=JobEvent.Kind.STEP).exists():
        assert time.monotonic() < deadline, list(row.events.values_list("message", flat=True))
        time.sleep(0.3)
    cancelled = api.fine_tuning.jobs.cancel(job.id)
    at_cancel = FineTuningJob.objects.get(pk=row.pk).step
    assert cancelled.status == "running"
    job = wait_for_job(api, job.id, FINISHED, timeout=60)
    assert job.status == "cancelled" and job.fine_tuned_model is None
    row.refresh_from_db()
    assert row.step - at_cancel <= 1 and row.step < row.total_steps
    assert row.events.filter(kind=JobEvent.Kind.STEP).count() == row.step
    assert row.events.last().message == "Cancelled: what was logged is kept"
    with pytest.raises(openai.APIStatusError) as again:
        api.fine_tuning.jobs.cancel(job.id)
    assert again.value.status_code == 409
