"""Checking uploaded files: every bad row named by its line, and nothing stored when one is bad."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from apps.finetuning.datasets import DatasetInvalid, parse_dataset
from apps.finetuning.models import Dataset, FineTuningJob

from .conftest import GOOD, chat_row, jsonl

pytestmark = pytest.mark.django_db

BAD = b"\n".join(
    [
        json.dumps(chat_row("Fine?", "Yes.")).encode(),  # 1: good
        b'{"messages": [',  # 2: broken JSON
        json.dumps({"messages": [{"role": "user", "content": "no answer"}]}).encode(),  # 3
        json.dumps({"messages": [{"role": "robot", "content": "x"}]}).encode(),  # 4
        b"",  # 5: empty line
        json.dumps({"prompt": "a", "completion": "b"}).encode(),  # 6: another shape
        json.dumps(["not", "an", "object"]).encode(),  # 7
        json.dumps(chat_row("Fine?", "   ")).encode(),  # 8: empty answer
        json.dumps(chat_row("Fine?", "Yes.")).encode(),  # 9: good
    ]
)


def test_each_bad_row_is_reported_with_its_line():
    with pytest.raises(DatasetInvalid) as caught:
        parse_dataset(BAD)
    assert [(e.line, e.message) for e in caught.value.errors] == [
        (2, "not valid JSON (Expecting value at column 15)"),
        (3, "the last message must be the assistant's (it is what the model learns)"),
        (4, "messages[0].role must be one of system, user, assistant"),
        (5, "an empty line; each line must hold one JSON object"),
        (6, "a prompt_completion row in a chat file; use one shape per file"),
        (7, "not a JSON object"),
        (8, "messages[1].content must be non-empty text"),
    ]
    assert str(caught.value).startswith("7 rows are not valid; fix them and upload again: line 2:")


def test_good_files_in_both_shapes():
    parsed = parse_dataset(GOOD)
    assert (parsed.format, len(parsed.rows), parsed.lines) == ("chat", 6, [1, 2, 3, 4, 5, 6])
    pairs = jsonl([{"prompt": "2+2=", "completion": "4"}, {"prompt": "3+3=", "completion": "6"}])
    assert parse_dataset(pairs).format == "prompt_completion"


@pytest.mark.parametrize(
    ("data", "summary"),
    [
        (b"", "The file is empty."),
        (b"\xff\xfe{}", "The file is not UTF-8 text."),
    ],
)
def test_unreadable_files(data, summary):
    with pytest.raises(DatasetInvalid, match=summary):
        parse_dataset(data)


def test_size_limits(settings):
    settings.FINETUNE_MAX_UPLOAD_BYTES = 100
    with pytest.raises(DatasetInvalid, match="the limit is 100"):
        parse_dataset(GOOD)
    settings.FINETUNE_MAX_UPLOAD_BYTES = 10**6
    settings.FINETUNE_MAX_ROWS = 5
    with pytest.raises(DatasetInvalid, match="The file has 6 rows; the limit is 5"):
        parse_dataset(GOOD)


def test_upload_page_refuses_a_bad_file_and_stores_nothing(client, owner, settings):
    client.force_login(owner)
    upload = SimpleUploadedFile("bad.jsonl", BAD, content_type="application/jsonl")
    response = client.post(reverse("finetuning-dataset-upload"), {"file": upload})
    assert response.status_code == 400
    body = response.content.decode()
    assert "line 2: not valid JSON" in body and "line 8: messages[1].content" in body
    assert not Dataset.objects.exists()
    assert not (settings.MEDIA_ROOT / "datasets" / str(owner.pk)).exists()


def test_upload_page_stores_a_good_file_under_a_generated_name(
    client, owner, chat_model, django_capture_on_commit_callbacks
):
    client.force_login(owner)
    upload = SimpleUploadedFile("../../etc/passwd.jsonl", GOOD)
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(reverse("finetuning-dataset-upload"), {"file": upload})
    dataset = Dataset.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("finetuning-dataset", args=[dataset.pk])
    assert (dataset.filename, dataset.rows, dataset.format) == ("passwd.jsonl", 6, "chat")
    assert dataset.file.name == f"datasets/{owner.pk}/{dataset.pk}.jsonl"
    assert dataset.file.read() == GOOD
    assert len(callbacks) == 1  # the token count is queued for a worker


def test_demo_dataset_is_valid_and_one_click_away(
    client, owner, django_capture_on_commit_callbacks
):
    client.force_login(owner)
    page = client.get(reverse("finetuning-index")).content.decode()
    assert reverse("finetuning-demo-file", args=["mascot-train.jsonl"]) in page
    with django_capture_on_commit_callbacks():
        client.post(reverse("finetuning-dataset-demo"))
    names = sorted(d.filename for d in Dataset.objects.filter(owner=owner))
    assert names == ["mascot-train.jsonl", "mascot-validation.jsonl"]
    download = client.get(reverse("finetuning-demo-file", args=["mascot-train.jsonl"]))
    assert download.status_code == 200
    assert client.get(reverse("finetuning-demo-file", args=["..%2Fmodels.py"])).status_code == 404


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("n_epochs", "0", "Invalid value for n_epochs"),
        ("learning_rate", "0.5", "Invalid value for learning_rate"),
        ("lora_alpha", "4000", "Invalid value for lora_alpha"),
        ("suffix", "no spaces", "suffix may hold only letters, digits and"),
    ],
)
def test_a_job_with_bad_settings_is_refused_and_not_written(
    client, owner, dataset, chat_model, field, value, message
):
    client.force_login(owner)
    data = {
        "model": chat_model.slug,
        "training_file": str(dataset.pk),
        "method": "lora",
        "n_epochs": "3",
        "batch_size": "8",
        "lora_rank": "16",
        "lora_alpha": "32",
        "max_seq_length": "512",
        "validation_fraction": "0.1",
        "seed": "1",
        field: value,
    }
    response = client.post(reverse("finetuning-job-create"), data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not FineTuningJob.objects.exists()


CSV = b'text,label\nI was charged twice,billing\n"A quoted, comma text",billing\nThe app crashes,bug\n'


def test_classification_rows_from_csv_and_jsonl():
    parsed = parse_dataset(CSV)
    assert (parsed.format, parsed.is_csv, parsed.lines) == ("classification", True, [2, 3, 4])
    assert parsed.rows[1] == {"text": "A quoted, comma text", "label": "billing"}
    assert parsed.label_counts == {"billing": 2, "bug": 1}
    rows = jsonl([{"text": "hello", "label": 1}, {"text": "bye", "label": "0"}])
    parsed = parse_dataset(rows)
    assert parsed.format == "classification" and parsed.label_counts == {"1": 1, "0": 1}


def test_bad_classification_rows_are_reported_with_their_lines():
    data = (
        b"label,text\n"  # columns in either order
        b"billing,Fine row\n"  # 2
        b",No label here\n"  # 3
        b"bug\n"  # 4: one column
        b'bug,"a text that spans\ntwo lines"\n'  # 5-6: fine
        b"bug,x,extra\n"  # 7
        b"\n"  # 8
        b"bug,   \n"  # 9
    )
    with pytest.raises(DatasetInvalid) as caught:
        parse_dataset(data)
    assert [(e.line, e.message) for e in caught.value.errors] == [
        (3, '"label" must not be empty'),
        (4, "1 columns; a row has text and label"),
        (7, "3 columns; a row has text and label"),
        (8, "an empty row"),
        (9, '"text" must be non-empty text'),
    ]
    with pytest.raises(DatasetInvalid, match="exactly the columns text and label"):
        parse_dataset(b"text,label,weight\nhi,a,1\n")
    with pytest.raises(DatasetInvalid, match="a classifier needs at least two labels"):
        parse_dataset(b"text,label\nhi,a\nho,a\n")
    with pytest.raises(DatasetInvalid) as caught:
        parse_dataset(jsonl([{"text": "hi", "label": "a"}, {"text": "ho", "label": ["a"]}]))
    assert str(caught.value.errors[0]) == 'line 2: "label" must be text or a whole number'


def test_unbalanced_labels_get_a_warning(client, owner, django_capture_on_commit_callbacks):
    client.force_login(owner)
    rows = [{"text": f"common {i}", "label": "common"} for i in range(20)]
    rows += [{"text": "rare one", "label": "rare"}, {"text": "rare two", "label": "rare"}]
    upload = SimpleUploadedFile("labels.jsonl", jsonl(rows))
    with django_capture_on_commit_callbacks():
        response = client.post(reverse("finetuning-dataset-upload"), {"file": upload}, follow=True)
    body = response.content.decode()
    assert "The labels are unbalanced: rare has 2 rows against 20" in body
    dataset = Dataset.objects.get()
    assert dataset.label_counts == {"common": 20, "rare": 2}
    balanced = Dataset(label_counts={"a": 10, "b": 3})
    assert balanced.imbalance_warning == ""


def test_a_conversation_must_start_with_the_user():
    rows = [
        {"messages": [{"role": "assistant", "content": "Hi"}]},
        {"messages": [{"role": "system", "content": "S"}, {"role": "assistant", "content": "Hi"}]},
    ]
    with pytest.raises(DatasetInvalid) as caught:
        parse_dataset(jsonl(rows))
    assert [e.line for e in caught.value.errors] == [1, 2]
    assert "must start with a user message" in caught.value.errors[0].message
