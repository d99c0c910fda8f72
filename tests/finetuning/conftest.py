from __future__ import annotations

import json
from pathlib import Path

import pytest

from apps.finetuning.models import Dataset, FineTuningJob
from apps.finetuning.schemas import Hyperparameters
from apps.finetuning.services import dataset_create, finetune_job_create

DEMO = Path(__file__).resolve().parents[2] / "apps/finetuning/demo"


def chat_row(question: str, answer: str) -> dict:
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


GOOD = jsonl([chat_row(f"Question {i}?", f"Answer {i}.") for i in range(6)])


@pytest.fixture
def dataset(owner, django_capture_on_commit_callbacks) -> Dataset:
    with django_capture_on_commit_callbacks(execute=False):
        return dataset_create(owner=owner, filename="good.jsonl", data=GOOD)


@pytest.fixture
def job(owner, dataset, chat_model, django_capture_on_commit_callbacks) -> FineTuningJob:
    with django_capture_on_commit_callbacks(execute=False):
        return finetune_job_create(
            owner=owner,
            base_version=chat_model.active_version,
            training_file=dataset,
            hyperparameters=Hyperparameters(),
        )
