from __future__ import annotations

import json
from typing import Any

from django import forms
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from apps.core.errors import ServiceError
from apps.inference.grammars import json_schema_grammar
from apps.inference.protocol import MAX_NEW_TOKENS, SamplingParams


class RenameForm(forms.Form):
    title = forms.CharField(label=gettext_lazy("Title"), max_length=200, required=False)


class SamplingForm(forms.Form):
    """A form whose ``sampling_fields`` are sampling parameters, checked against the bounds of
    SamplingParams (the one place that defines them). Once valid, ``cleaned_data["settings"]``
    holds those that are set, for ``sampling_params_for`` (the version's defaults fill in the
    rest)."""

    sampling_fields: tuple[str, ...] = ()

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if all(name in data for name in self.sampling_fields):
            settings = {k: data[k] for k in self.sampling_fields if data[k] is not None}
            try:
                SamplingParams.parse(settings)
            except ServiceError as exc:
                self.add_error(exc.param if exc.param in self.fields else None, exc.message)
            else:
                data["settings"] = settings
        return data


class SettingsForm(SamplingForm):
    """The settings panel."""

    sampling_fields = ("temperature", "top_p", "max_tokens")

    model = forms.CharField(label=gettext_lazy("Model"), max_length=200)
    system_prompt = forms.CharField(
        label=gettext_lazy("System prompt"), max_length=8000, required=False, widget=forms.Textarea
    )
    temperature = forms.FloatField(label=gettext_lazy("Temperature"))
    top_p = forms.FloatField(label=gettext_lazy("Top p"))
    max_tokens = forms.IntegerField(label=gettext_lazy("Max tokens"), max_value=MAX_NEW_TOKENS)
    json_schema = forms.CharField(
        label=gettext_lazy("JSON schema"), max_length=20000, required=False, widget=forms.Textarea
    )

    def clean_json_schema(self) -> dict[str, Any] | None:
        """The schema answers must follow (None when the box is empty), checked as the API
        checks ``response_format``: a keyword the decoder cannot follow is named."""
        text = self.cleaned_data["json_schema"].strip()
        if not text:
            return None
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(
                _(
                    "The JSON schema is not valid JSON (%(reason)s at line %(line)s, column %(column)s)."
                )
                % {"reason": exc.msg, "line": exc.lineno, "column": exc.colno}
            ) from None
        try:
            json_schema_grammar(schema, param="the JSON schema")
        except ServiceError as exc:
            raise forms.ValidationError(exc.message[:1].upper() + exc.message[1:]) from None
        return schema  # type: ignore[no-any-return]


class CompareForm(SamplingForm):
    """One prompt for two models, with one set of parameters (greedy by default: comparable)."""

    sampling_fields = ("temperature", "max_tokens")

    a = forms.CharField(max_length=200, label=gettext_lazy("Model A"))
    b = forms.CharField(max_length=200, label=gettext_lazy("Model B"))
    text = forms.CharField(
        max_length=32000, widget=forms.Textarea(attrs={"rows": 3}), label=gettext_lazy("Prompt")
    )
    temperature = forms.FloatField(label=gettext_lazy("Temperature"), initial=0.0)
    max_tokens = forms.IntegerField(
        label=gettext_lazy("Max tokens"), initial=128, max_value=MAX_NEW_TOKENS
    )


class CompleteForm(SamplingForm):
    """Completion mode: a raw prompt, continued by the model as it stands (no chat template)."""

    sampling_fields = ("temperature", "max_tokens", "seed")

    model = forms.CharField(label=gettext_lazy("Model"), max_length=200)
    prompt = forms.CharField(
        label=gettext_lazy("Prompt"),
        max_length=32000,
        strip=False,  # a raw prompt is continued as typed: a trailing space or newline counts
        widget=forms.Textarea(attrs={"rows": 6}),
        error_messages={"required": gettext_lazy("Type a prompt first.")},
    )
    temperature = forms.FloatField(label=gettext_lazy("Temperature"), initial=0.7)
    max_tokens = forms.IntegerField(
        label=gettext_lazy("Max tokens"), initial=128, max_value=MAX_NEW_TOKENS
    )
    seed = forms.IntegerField(
        label=gettext_lazy("Seed"),
        required=False,
        min_value=0,
        widget=forms.NumberInput(attrs={"placeholder": gettext_lazy("random")}),
        help_text=gettext_lazy("Empty: a new one each time"),
    )


class ClassifyForm(forms.Form):
    model = forms.CharField(label=gettext_lazy("Classifier"), max_length=200)
    text = forms.CharField(
        label=gettext_lazy("Text"), max_length=4000, widget=forms.Textarea(attrs={"rows": 3})
    )
