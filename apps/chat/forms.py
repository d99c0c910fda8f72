from __future__ import annotations

from typing import Any

from django import forms

from apps.core.errors import ServiceError
from apps.inference.protocol import MAX_NEW_TOKENS, SamplingParams


class RenameForm(forms.Form):
    title = forms.CharField(max_length=200, required=False)


class SettingsForm(forms.Form):
    """The settings panel. Bounds come from SamplingParams, the one place that defines them."""

    model = forms.CharField(max_length=200)
    system_prompt = forms.CharField(max_length=8000, required=False, widget=forms.Textarea)
    temperature = forms.FloatField()
    top_p = forms.FloatField()
    max_tokens = forms.IntegerField(max_value=MAX_NEW_TOKENS)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        numbers: dict[str, Any] = {
            k: data[k] for k in ("temperature", "top_p", "max_tokens") if k in data
        }
        if len(numbers) == 3:
            try:
                SamplingParams.parse(numbers)
            except ServiceError as exc:
                self.add_error(exc.param if exc.param in numbers else None, exc.message)
        return data


class CompareForm(forms.Form):
    """One prompt for two models, with one set of parameters (greedy by default: comparable)."""

    a = forms.CharField(max_length=200, label="Model A")
    b = forms.CharField(max_length=200, label="Model B")
    text = forms.CharField(
        max_length=32000, widget=forms.Textarea(attrs={"rows": 3}), label="Prompt"
    )
    temperature = forms.FloatField(initial=0.0)
    max_tokens = forms.IntegerField(initial=128, max_value=MAX_NEW_TOKENS)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if "temperature" in data and "max_tokens" in data:
            try:
                data["params"] = SamplingParams.parse(
                    {"temperature": data["temperature"], "max_tokens": data["max_tokens"]}
                )
            except ServiceError as exc:
                self.add_error(exc.param if exc.param in self.fields else None, exc.message)
        return data


class CompleteForm(forms.Form):
    """Completion mode: a raw prompt, continued by the model as it stands (no chat template)."""

    model = forms.CharField(max_length=200)
    prompt = forms.CharField(
        max_length=32000,
        strip=False,  # a raw prompt is continued as typed: a trailing space or newline counts
        widget=forms.Textarea(attrs={"rows": 6}),
        error_messages={"required": "Type a prompt first."},
    )
    temperature = forms.FloatField(initial=0.7)
    max_tokens = forms.IntegerField(initial=128, max_value=MAX_NEW_TOKENS)
    seed = forms.IntegerField(
        required=False,
        min_value=0,
        widget=forms.NumberInput(attrs={"placeholder": "random"}),
        help_text="Empty: a new one each time",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if "temperature" in data and "max_tokens" in data:
            try:
                data["params"] = SamplingParams.parse(
                    {
                        "temperature": data["temperature"],
                        "max_tokens": data["max_tokens"],
                        "seed": data.get("seed"),
                    }
                )
            except ServiceError as exc:
                self.add_error(exc.param if exc.param in self.fields else None, exc.message)
        return data


class ClassifyForm(forms.Form):
    model = forms.CharField(max_length=200)
    text = forms.CharField(max_length=4000, widget=forms.Textarea(attrs={"rows": 3}))
