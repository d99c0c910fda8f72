"""The trainer and the job runner on a tiny random model, in this process (fast): what is learned
from a row, both methods end to end with the result loading in the engine, and a row over the
maximum length failing the job by its line number."""

from __future__ import annotations

import pytest

from apps.catalog.models import LanguageModel, ModelVersion
from apps.catalog.selectors import version_spec
from apps.finetuning.models import FineTuningJob, JobEvent
from apps.finetuning.runner import finetune_job_run
from apps.finetuning.schemas import Hyperparameters
from apps.finetuning.services import dataset_create, finetune_job_create
from apps.finetuning.trainers.causal_lm import IGNORE, encode_row
from apps.inference.engines.transformers_backend import TransformersEngine
from apps.inference.protocol import Finished, GenerationRequest, SamplingParams, TokenDelta
from tests.factories import ModelVersionFactory

from .conftest import GOOD, chat_row, jsonl

pytestmark = pytest.mark.django_db


@pytest.fixture
def tiny_model(tiny_model_dir) -> LanguageModel:
    return ModelVersionFactory(model__slug="tiny", source=str(tiny_model_dir), is_active=True).model


def test_only_the_assistant_turns_are_learned(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    row = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": "First answer"},
            {"role": "user", "content": "Second question"},
            {"role": "assistant", "content": "Second answer"},
        ]
    }
    ids, labels = encode_row(tokenizer, row, "chat")
    assert len(ids) == len(labels)
    learned = tokenizer.decode([t for t, label in zip(ids, labels, strict=True) if label != IGNORE])
    assert learned == "First answer<|im_end|>\nSecond answer<|im_end|>\n"
    ids, labels = encode_row(tokenizer, {"prompt": "2+2=", "completion": "4"}, "prompt_completion")
    learned = [t for t, label in zip(ids, labels, strict=True) if label != IGNORE]
    assert tokenizer.decode(learned) == "4" + tokenizer.eos_token


def run_job(owner, model, data, method, **hyperparameters) -> FineTuningJob:
    dataset = dataset_create(owner=owner, filename="d.jsonl", data=data)
    job = finetune_job_create(
        owner=owner,
        base_version=model.active_version,
        training_file=dataset,
        method=method,
        hyperparameters=Hyperparameters(**{"n_epochs": 2, "batch_size": 4, **hyperparameters}),
        suffix="t",
    )
    finetune_job_run(job_id=str(job.pk), worker="inline@test")
    job.refresh_from_db()
    return job


@pytest.mark.parametrize(
    ("method", "source_kind"),
    [("lora", ModelVersion.Source.ADAPTER), ("full", ModelVersion.Source.LOCAL)],
)
def test_both_methods_deploy_a_model_that_loads(
    owner, tiny_model, tiny_model_dir, method, source_kind
):
    job = run_job(owner, tiny_model, GOOD, method)
    assert job.status == "succeeded", job.error_message
    version = job.result_version
    assert version.source_kind == source_kind
    assert version.model.owner == owner and version.model.visibility == "private"
    assert version.model.slug == f"ft:tiny:t:{job.id.hex[:8]}"
    assert (job.step, job.total_steps) == (4, 4)  # 5 training rows (1 held out), batches of 4
    assert job.evaluation["base"]["loss"] > 0 and len(job.evaluation["samples"]) == 1
    engine = TransformersEngine(version_spec(version), cache_dir=tiny_model_dir, dtype="float32")
    events = list(
        engine.generate(
            GenerationRequest(
                request_id="r",
                params=SamplingParams(temperature=0, max_tokens=4),
                messages=[{"role": "user", "content": "Question 1?"}],
            )
        )
    )
    assert isinstance(events[-1], Finished) and events[-1].completion_tokens >= 1
    assert any(isinstance(e, TokenDelta) for e in events)


def test_a_row_over_the_max_length_fails_the_job_by_its_line(owner, tiny_model):
    rows = [chat_row(f"Question {i}?", f"Answer {i}.") for i in range(4)]
    rows.insert(2, chat_row("Long? " + "word " * 100, "Yes."))
    job = run_job(owner, tiny_model, jsonl(rows), "lora", max_seq_length=64, validation_fraction=0)
    assert job.status == "failed" and job.error_code == "invalid_file"
    assert "line 3:" in job.error_message and "over max_seq_length (64)" in job.error_message
    assert job.result_version is None and job.step == 0
    event = job.events.last()
    assert event.level == JobEvent.Level.ERROR
    assert event.data["errors"][0]["line"] == 3


def test_a_cancel_during_deployment_cancels_and_leaves_no_model(owner, tiny_model, monkeypatch):
    from apps.finetuning import runner

    real_save = runner._save

    def save_then_cancel(job, trainer, deadline):
        output = real_save(job, trainer, deadline)
        FineTuningJob.objects.filter(pk=job.pk).update(cancel_requested=True)
        return output

    monkeypatch.setattr(runner, "_save", save_then_cancel)
    job = run_job(owner, tiny_model, GOOD, "lora")
    assert (job.status, job.result_version) == ("cancelled", None)
    assert not LanguageModel.objects.filter(owner=owner).exists()
    assert not runner._output_dir(job).exists()


def test_a_job_over_its_time_limit_fails_with_a_reason(owner, tiny_model, settings):
    settings.FINETUNE_MAX_SECONDS = 0.0
    job = run_job(owner, tiny_model, GOOD, "lora")
    assert (job.status, job.error_code) == ("failed", "timeout")
    assert "time limit" in job.error_message


def test_a_classifier_without_a_tfidf_baseline_still_succeeds(owner, django_db_blocker):
    from apps.catalog.packaged import register_packaged_models

    register_packaged_models(LanguageModel, ModelVersion)
    encoder = LanguageModel.objects.get(slug="all-minilm-l6-v2")
    rows = [{"text": "!" * (i % 3 + 1), "label": "a"} for i in range(6)]
    rows += [{"text": "?" * (i % 3 + 1), "label": "b"} for i in range(6)]
    job = run_job(owner, encoder, jsonl(rows), "head", n_epochs=1)
    assert job.status == "succeeded", job.error_message
    assert job.evaluation["baselines"]["tfidf_logreg"] is None
    predictions = job.evaluation["predictions"]
    right = sum(p["label"] == p["predicted"] for p in predictions)
    assert predictions and job.evaluation["test"]["accuracy"] == right / len(predictions)


def test_stratified_split_keeps_every_label_in_every_part():
    from apps.finetuning.datasets import ParsedDataset, stratified_split

    rows = [{"text": f"t{i}", "label": "big"} for i in range(40)]
    rows += [{"text": f"s{i}", "label": "small"} for i in range(3)]
    parsed = ParsedDataset("classification", rows, list(range(1, len(rows) + 1)))
    train, test, val = stratified_split(parsed, (0.2, 0.1), seed=1)
    # big: 8 test, 4 validation, 28 training; small (3 rows): 1 test, 0 validation, 2 training
    assert [len(p.rows) for p in (train, test, val)] == [30, 9, 4]
    counts = [sorted({r["label"] for r in p.rows}) for p in (train, test)]
    assert counts == [["big", "small"], ["big", "small"]]
    assert not set(train.lines) & set(test.lines) and not set(test.lines) & set(val.lines)
    assert stratified_split(parsed, (0.2, 0.1), seed=1)[1].lines == test.lines  # seeded
