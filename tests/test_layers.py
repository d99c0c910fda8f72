"""Every import points down the layers of DESIGN.md ("Layers"), and no two apps import each other.

The layers, lowest first: 0 the contracts (``apps.core``, ``apps.inference.protocol``), 1
``accounts`` and ``audit``, 2 ``catalog``, 3 ``inference``, 4 ``chat``, ``finetuning``, ``evals``
and ``api``, 5 ``playground`` (the composition root). A module may import its own app and the
layers below; apps of one layer may import each other as long as no circle forms. Imports inside
functions count (they run too); imports under ``if TYPE_CHECKING`` do not.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CONTRACTS = {"apps.core", "apps.inference.protocol"}
LAYERS = {
    "apps.core": 0,
    "apps.inference.protocol": 0,
    "apps.accounts": 1,
    "apps.audit": 1,
    "apps.catalog": 2,
    "apps.inference": 3,
    "apps.chat": 4,
    "apps.finetuning": 4,
    "apps.evals": 4,
    "apps.api": 4,
    "playground": 5,
}


def unit_of(module: str) -> str | None:
    """The layer unit a dotted module belongs to: the longest key of LAYERS it starts with."""
    found = [key for key in LAYERS if module == key or module.startswith(key + ".")]
    return max(found, key=len) if found else None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import that runs in ``path``, the module ``module``."""
    tree = ast.parse(path.read_text(), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{alias.name}" for alias in node.names]
            # ``from apps.inference import protocol`` imports the submodule, not the package.
            found += [(node.lineno, n if unit_of(n) != unit_of(target) else target) for n in names]
    return sorted(found)


def sources() -> list[Path]:
    """The modules of every layer (``apps/__init__.py`` only makes ``apps`` a package)."""
    found = [*ROOT.glob("apps/*/**/*.py"), *ROOT.glob("playground/**/*.py")]
    return sorted(found)


def test_every_import_points_down():
    upward = []
    for path in sources():
        here = unit_of(module_name(path))
        assert here is not None, f"{path} is in no layer: add its app to LAYERS"
        for line, target in imports_of(path, module_name(path)):
            there = unit_of(target)
            if there is None or there == here:
                continue
            if LAYERS[there] > LAYERS[here] or (here in CONTRACTS and there not in CONTRACTS):
                upward.append(
                    f"{path.relative_to(ROOT)}:{line} imports {target} (layer {LAYERS[there]}) "
                    f"from layer {LAYERS[here]}"
                )
    assert upward == []


def test_no_two_apps_import_each_other():
    edges: dict[str, set[str]] = defaultdict(set)
    for path in sources():
        here = unit_of(module_name(path))
        for _, target in imports_of(path, module_name(path)):
            there = unit_of(target)
            if there is not None and there != here:
                edges[here].add(there)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(
            step == goal or (step not in seen and reaches(step, goal, seen | {step}))
            for step in edges[start]
        )

    circles = sorted(unit for unit in list(edges) if reaches(unit, unit, {unit}))
    assert circles == []


def test_the_check_sees_upward_and_relative_imports_but_not_typing_ones(tmp_path):
    """The checker itself, on a module of its own: imports inside functions are found, relative
    ones resolved, and ``TYPE_CHECKING`` ones left out."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\n"
        "from .models import Worker\n"
        "if TYPE_CHECKING:\n"
        "    from apps.accounts.models import User\n"
        "def f():\n"
        "    from apps.chat import models\n"
    )
    assert imports_of(probe, "apps.core.probe") == [
        (1, "typing"),
        (2, "apps.core.models"),
        (6, "apps.chat"),
    ]
