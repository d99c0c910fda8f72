"""Where a version's weights may come from. Shared by the admin (to refuse a bad source as it is
typed) and the workers (which check again before reading anything)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings


def allowed_roots() -> list[Path]:
    """Folders local and adapter sources must lie under: the models root, and the folder
    fine-tuning writes its results to."""
    return [Path(settings.MODELS_ROOT).resolve(), Path(settings.FINETUNE_OUTPUT_DIR).resolve()]


def local_folder(source: str) -> Path:
    """The folder ``source`` names (relative to MODELS_ROOT unless absolute), with links and
    ``..`` resolved; ValueError when it lies outside every allowed root."""
    path = Path(source)
    if not path.is_absolute():
        path = Path(settings.MODELS_ROOT) / path
    resolved = path.resolve()
    if not any(resolved.is_relative_to(root) for root in allowed_roots()):
        raise ValueError(
            f"{source} is outside the models root ({settings.MODELS_ROOT}); "
            "put the model's folder under it."
        )
    return resolved
