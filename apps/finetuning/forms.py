from __future__ import annotations

from typing import Any

from django import forms

from apps.core.errors import ServiceError

from .models import FineTuningJob
from .schemas import Hyperparameters


class DatasetUploadForm(forms.Form):
    file = forms.FileField(help_text="JSONL (chat, prompt/completion or text/label rows) or CSV")


class JobForm(forms.Form):
    """A new job. The choices are filled per user; bounds come from Hyperparameters."""

    model = forms.ChoiceField(label="Base model")
    training_file = forms.ChoiceField()
    validation_file = forms.ChoiceField(
        required=False, help_text="Optional; otherwise a share of the training rows is held out"
    )
    method = forms.ChoiceField(choices=FineTuningJob.Method.choices)
    suffix = forms.CharField(max_length=32, required=False, help_text="Part of the model's name")
    n_epochs = forms.IntegerField(required=False, label="Epochs", initial=3)
    learning_rate = forms.FloatField(
        required=False,
        help_text="Empty: chat 2e-3 LoRA, 5e-5 full; classifier 1e-4 full, 1e-2 head",
    )
    batch_size = forms.IntegerField(required=False, initial=8)
    lora_rank = forms.IntegerField(required=False, label="LoRA rank", initial=16)
    lora_alpha = forms.IntegerField(required=False, label="LoRA alpha", initial=32)
    max_seq_length = forms.IntegerField(required=False, label="Max sequence length", initial=512)
    validation_fraction = forms.FloatField(required=False, initial=0.1)
    test_fraction = forms.FloatField(
        required=False, initial=0.2, help_text="Classifiers: held out for the test"
    )
    seed = forms.IntegerField(required=False, initial=42)

    HYPERPARAMETERS = (
        "n_epochs",
        "learning_rate",
        "batch_size",
        "lora_rank",
        "lora_alpha",
        "max_seq_length",
        "validation_fraction",
        "test_fraction",
        "seed",
    )

    def __init__(self, *args: Any, models: list[Any], datasets: list[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        files = [(str(d.pk), f"{d.filename} ({d.rows} rows)") for d in datasets]
        choices = {
            "model": [(m.slug, m.display_name) for m in models],
            "training_file": files,
            "validation_file": [("", "— hold out part of the training rows —"), *files],
        }
        for name, options in choices.items():
            field = self.fields[name]
            assert isinstance(field, forms.ChoiceField)
            field.choices = options
        for name in ("learning_rate", "validation_fraction", "test_fraction"):
            self.fields[name].widget.attrs["step"] = "any"

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        values = {k: data[k] for k in self.HYPERPARAMETERS if data.get(k) is not None}
        try:
            data["hyperparameters"] = Hyperparameters.parse(values)
        except ServiceError as exc:
            self.add_error(exc.param if exc.param in self.fields else None, exc.message)
        return data
