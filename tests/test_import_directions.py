"""DESIGN.md's import directions: each package may reach only what its row allows."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"engine", "models", "connectors", "appliance", "ui"}

# package → (our packages it may import, third-party packages it may import; None = any)
RULES: dict[str, tuple[set[str], set[str] | None]] = {
    "engine": (set(), {"numpy", "scipy"}),
    "connectors": (set(), None),
    "models": ({"engine"}, None),
    "appliance": ({"models", "engine", "connectors"}, None),
    "ui": (set(), None),
}


def imported_roots(path: Path, package_parts: tuple[str, ...]) -> list[tuple[int, str]]:
    """(line, top-level module) for every import in a file; relative imports are resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                found.append((node.lineno, base[0] if base else ""))
            elif node.module:
                found.append((node.lineno, node.module.split(".")[0]))
    return found


def violations(root: Path) -> list[str]:
    problems = []
    for package, (ours_allowed, third_allowed) in RULES.items():
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root)
            parts = rel.with_suffix("").parts
            for line, module in imported_roots(path, parts[:-1]):
                if module == package or module in sys.stdlib_module_names or module == "__future__":
                    continue
                if module in OURS:
                    if module not in ours_allowed:
                        problems.append(f"{rel}:{line}: {package} may not import {module}")
                elif third_allowed is not None and module not in third_allowed:
                    problems.append(f"{rel}:{line}: {package} may not import third-party {module}")
    return problems


def test_packages_import_only_what_design_allows():
    assert violations(ROOT) == []


def test_ui_never_reaches_the_backend_even_through_third_parties():
    for path in (ROOT / "ui").rglob("*.py"):
        for _, module in imported_roots(path, ("ui",)):
            assert module not in {"appliance", "models", "engine", "connectors"}, path


@pytest.mark.parametrize(
    "package,source,expected",
    [
        ("engine", "import models\n", "engine may not import models"),
        ("engine", "from appliance.cli import main\n", "engine may not import appliance"),
        ("engine", "import torch\n", "engine may not import third-party torch"),
        ("connectors", "from engine import Tensor\n", "connectors may not import engine"),
        ("ui", "from appliance import api\n", "ui may not import appliance"),
        ("ui", "import models.bundle\n", "ui may not import models"),
        ("models", "from appliance import settings\n", "models may not import appliance"),
    ],
)
def test_checker_catches_forbidden_imports(tmp_path, package, source, expected):
    for name in RULES:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / package / "bad.py").write_text(source)
    found = violations(tmp_path)
    assert len(found) == 1 and expected in found[0] and found[0].startswith(f"{package}/bad.py:1")


def test_relative_imports_are_resolved(tmp_path):
    for name in RULES:
        (tmp_path / name).mkdir()
    (tmp_path / "engine" / "sub").mkdir()
    (tmp_path / "engine" / "sub" / "x.py").write_text("from ..tensor import Tensor\nfrom . import y\n")
    assert violations(tmp_path) == []
