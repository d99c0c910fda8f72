from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from apps.core.errors import ServiceError

from .models import FineTuningJob
from .schemas import Hyperparameters


class DatasetUploadForm(forms.Form):
    file = forms.FileField(
        label=gettext_lazy("File"),
        help_text=gettext_lazy("JSONL (chat, prompt/completion or text/label rows) or CSV"),
    )


class JobForm(forms.Form):
    """A new job. The choices are filled per user; bounds come from Hyperparameters."""

    model = forms.ChoiceField(label=gettext_lazy("Base model"))
    training_file = forms.ChoiceField(label=gettext_lazy("Training file"))
    validation_file = forms.ChoiceField(
        label=gettext_lazy("Validation file"),
        required=False,
        help_text=gettext_lazy("Optional; otherwise a share of the training rows is held out"),
    )
    method = forms.ChoiceField(label=gettext_lazy("Method"), choices=FineTuningJob.Method.choices)
    suffix = forms.CharField(
        label=gettext_lazy("Suffix"),
        max_length=32,
        required=False,
        help_text=gettext_lazy("Part of the model's name"),
    )
    n_epochs = forms.IntegerField(required=False, label=gettext_lazy("Epochs"), initial=3)
    learning_rate = forms.FloatField(
        label=gettext_lazy("Learning rate"),
        required=False,
        help_text=gettext_lazy("Empty: chat 2e-3 LoRA, 5e-5 full; classifier 1e-4 full, 1e-2 head"),
    )
    batch_size = forms.IntegerField(label=gettext_lazy("Batch size"), required=False, initial=8)
    lora_rank = forms.IntegerField(required=False, label=gettext_lazy("LoRA rank"), initial=16)
    lora_alpha = forms.IntegerField(required=False, label=gettext_lazy("LoRA alpha"), initial=32)
    max_seq_length = forms.IntegerField(
        required=False, label=gettext_lazy("Max sequence length"), initial=512
    )
    validation_fraction = forms.FloatField(
        label=gettext_lazy("Validation fraction"), required=False, initial=0.1
    )
    test_fraction = forms.FloatField(
        label=gettext_lazy("Test fraction"),
        required=False,
        initial=0.2,
        help_text=gettext_lazy("Classifiers: held out for the test"),
    )
    seed = forms.IntegerField(label=gettext_lazy("Seed"), required=False, initial=42)
    eval_set = forms.ChoiceField(
        label=gettext_lazy("Eval set"),
        required=False,
        help_text=gettext_lazy("Chat jobs: run on the base and on the result, then compared"),
    )

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

    def __init__(
        self,
        *args: Any,
        models: list[Any],
        datasets: list[Any],
        eval_sets: list[Any] = (),  # type: ignore[assignment]
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        files = [
            (str(d.pk), _("%(name)s (%(rows)s rows)") % {"name": d.filename, "rows": d.rows})
            for d in datasets
        ]
        choices = {
            "model": [(m.slug, m.display_name) for m in models],
            "training_file": files,
            "validation_file": [("", _("— hold out part of the training rows —")), *files],
            "eval_set": [("", _("— none —")), *((str(s.pk), s.name) for s in eval_sets)],
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
