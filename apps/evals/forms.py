from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _


class EvalSetUploadForm(forms.Form):
    name = forms.CharField(
        label=_("Name"), max_length=200, required=False, help_text=_("Empty: the file's name")
    )
    file = forms.FileField(label=_("File"), help_text=_("JSONL, one item per line"))


class EvalRunForm(forms.Form):
    """A run of a set: the model, the sampling, and the graders (at least one)."""

    model = forms.ChoiceField(label=_("Model"))
    temperature = forms.FloatField(label=_("Temperature"), initial=0.0, min_value=0, max_value=2)
    max_tokens = forms.IntegerField(label=_("Max tokens"), initial=64, min_value=1, max_value=4096)
    string_check = forms.BooleanField(label=_("String check"), required=False, initial=True)
    operation = forms.ChoiceField(
        label=_("Operation"),
        choices=[
            ("ilike", _("contains an ideal, ignoring case")),
            ("like", _("contains an ideal")),
            ("eq", _("equals an ideal")),
            ("ieq", _("equals an ideal, ignoring case")),
            ("ne", _("equals no ideal")),
            ("regex", _("matches an ideal as a regular expression")),
        ],
        initial="ilike",
        required=False,
    )
    numeric = forms.BooleanField(label=_("Numeric"), required=False)
    tolerance = forms.FloatField(label=_("Tolerance"), initial=0.0, min_value=0, required=False)
    json_valid = forms.BooleanField(label=_("Valid JSON"), required=False)
    json_schema = forms.BooleanField(label=_("Valid against the item's schema"), required=False)
    label = forms.BooleanField(label=_("Label"), required=False)

    def __init__(self, *args: object, models: list[tuple[str, str]], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        field = self.fields["model"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = models

    def graders(self) -> list[dict[str, object]]:
        data = self.cleaned_data
        chosen: list[dict[str, object]] = []
        if data["string_check"]:
            chosen.append({"type": "string_check", "operation": data["operation"] or "ilike"})
        if data["numeric"]:
            chosen.append({"type": "numeric", "tolerance": data["tolerance"] or 0.0})
        chosen += [{"type": kind} for kind in ("json_valid", "json_schema", "label") if data[kind]]
        return chosen
