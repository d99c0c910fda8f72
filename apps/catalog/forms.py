from __future__ import annotations

from typing import Any

from django import forms

from apps.core.errors import ServiceError, quoted
from apps.core.sources import local_folder, packaged_source_problem
from apps.inference.protocol import SamplingParams

from .models import ModelVersion

# What a version's defaults may set: the request-level knobs, not a seed.
DEFAULTABLE = ("temperature", "top_p", "top_k", "max_tokens", "repetition_penalty", "stop")


class ModelVersionForm(forms.ModelForm):
    """Refuses, as the admin types it, a source the workers would refuse: a local folder outside
    the models root, a revision on a non-hub source, defaults outside the request bounds."""

    class Meta:
        model = ModelVersion
        fields = (
            "model",
            "label",
            "source_kind",
            "source",
            "revision",
            "base_version",
            "context_length",
            "dtype",
            "device",
            "engine",
            "default_params",
            "chat_template",
        )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        kind, source = data.get("source_kind"), data.get("source", "")
        if kind in (ModelVersion.Source.LOCAL, ModelVersion.Source.ADAPTER) and source:
            try:
                local_folder(source)
            except ValueError as exc:
                self.add_error("source", str(exc))
        if kind == ModelVersion.Source.PACKAGED and source:
            problem = packaged_source_problem(source)
            if problem:
                self.add_error("source", problem)
        if (
            kind == ModelVersion.Source.ADAPTER
            and "base_version" not in self.fields
            and (self.instance.pk is None or self.instance.base_version_id is None)
        ):
            self.add_error(
                "source_kind", "Add an adapter from the Model versions page, with its base."
            )
        if (
            data.get("engine") == ModelVersion.Engine.LLAMACPP
            and source
            and not (
                kind in (ModelVersion.Source.PACKAGED, ModelVersion.Source.LOCAL)
                and source.endswith(".gguf")
            )
        ):
            self.add_error(
                "engine",
                "llama.cpp serves one GGUF file (a packaged or local source ending in .gguf); "
                "choose auto or the torch decoder for this source.",
            )
        if data.get("revision") and kind != ModelVersion.Source.HUB:
            self.add_error("revision", "Only hub sources have a revision.")
        if "base_version" in self.fields and (kind == ModelVersion.Source.ADAPTER) != bool(
            data.get("base_version")
        ):
            self.add_error(
                "base_version", "An adapter needs a base version; other sources take none."
            )
        defaults = data.get("default_params")
        if defaults is not None:
            self._check_defaults(defaults)
        return data

    def _check_defaults(self, defaults: Any) -> None:
        if not isinstance(defaults, dict):
            self.add_error("default_params", 'Give a JSON object, such as {"temperature": 0.3}.')
            return
        unknown = sorted(set(defaults) - set(DEFAULTABLE))
        if unknown:
            self.add_error(
                "default_params",
                f"Unknown parameter {quoted(unknown[0])}; use any of {', '.join(DEFAULTABLE)}.",
            )
            return
        try:
            SamplingParams.parse(defaults)
        except ServiceError as exc:
            self.add_error("default_params", exc.message)
