from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _


class EvalSetUploadForm(forms.Form):
    name = forms.CharField(
        label=_("Name"), max_length=200, required=False, help_text=_("Empty: the file's name")
    )
    file = forms.FileField(label=_("File"), help_text=_("JSONL, one item per line"))
