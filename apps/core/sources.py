"""Where a model version's weights may come from: pure path rules, shared by the admin (to refuse a
bad source as it is typed) and the workers (which check again before reading anything)."""

from __future__ import annotations

import importlib.util
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


def packaged_path(source: str) -> Path:
    """``"<package>/<relative path>"`` to a file inside an installed package, without importing it."""
    package, _, relative = source.partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {package!r} is not installed")
    package_dir = Path(list(spec.submodule_search_locations)[0]).resolve()
    path = (package_dir / relative).resolve()
    if not path.is_relative_to(package_dir):
        raise ValueError(f"{source} points outside the package {package!r}")
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    return path


def packaged_source_problem(source: str) -> str:
    """What is wrong with the spelling of a packaged source, or "" (the package need not be
    installed where this is asked: the admin's web process, say)."""
    package, _, inside = source.partition("/")
    if not package or not inside or inside.startswith("/") or ".." in inside.split("/"):
        return "Give '<python package>/<path inside it>', without '..'."
    return ""
