from __future__ import annotations

from django.http import Http404

from apps.accounts.models import User
from apps.core.errors import quoted
from apps.inference.protocol import ModelSpec

from .models import LanguageModel, ModelVersion

DEFAULT_CHAT_MODEL = "smollm2-135m-instruct"
DEFAULT_CLASSIFIER_BASE = "all-minilm-l6-v2"  # the packaged encoder classifiers are trained on


def usable_models(user: User) -> list[LanguageModel]:
    """Every model ``user`` may use, in display order."""
    return list(LanguageModel.objects.usable_by(user))


def chat_models_for(user: User) -> list[LanguageModel]:
    """The chat models ``user`` may pick, in display order."""
    return list(LanguageModel.objects.usable_by(user).for_task(LanguageModel.Task.CHAT))


def access_model(user: User, slug: str, *, task: str | None = None) -> LanguageModel:
    """The usable model ``slug`` for ``user``; 404 when it is missing, disabled or not visible."""
    qs = LanguageModel.objects.usable_by(user)
    if task is not None:
        qs = qs.for_task(task)
    model = qs.filter(slug=slug).first()
    if model is None:
        raise Http404(f"No model {quoted(slug)} is available to you")
    return model


def active_version(model: LanguageModel) -> ModelVersion:
    """The version that serves ``model``. Precondition: the model came from ``access_model``."""
    version = model.active_version
    if version is None:
        raise Http404(f"Model {quoted(model.slug)} has no active version")
    return version


def version_spec(version: ModelVersion) -> ModelSpec:
    """What a worker needs to load ``version`` (an adapter's spec carries its base's)."""
    return ModelSpec(
        key=version.key,
        source_kind=version.source_kind,  # type: ignore[arg-type]
        source=version.source,
        context_length=version.context_length,
        base=version_spec(version.base_version) if version.base_version else None,
        revision=version.revision,
        dtype=version.dtype,
        device=version.device,
        chat_template=version.chat_template,
        version_id=version.pk,
        engine=version.engine,
    )
