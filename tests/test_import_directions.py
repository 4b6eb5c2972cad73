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


# Inside the packages (full module names): modules under ``scope`` (but not those ``exempt``) may
# import of ``within`` only what ``allowed`` lists. Names match by dotted prefix.
INNER_RULES: list[tuple[str, tuple[str, ...], str, tuple[str, ...], str]] = [
    (
        "appliance",
        ("appliance.api", "appliance.runtime"),
        "appliance.api",
        (),
        "only the API and its server",
    ),
    ("appliance", ("appliance.api",), "fastapi", (), "HTTP lives in the API layer"),
    ("appliance", ("appliance.api",), "starlette", (), "HTTP lives in the API layer"),
    ("appliance.storage", (), "appliance", ("appliance.storage", "appliance.errors"), "storage is the bottom layer"),
    ("connectors", ("connectors.factory",), "connectors", ("connectors.base",), "source kinds share only the base"),
    ("tests", ("tests.helpers",), "tests", ("tests.helpers",), "tests share helpers, never each other"),
    ("ui", ("ui.views",), "ui.views", (), "pages are not imported by the client or components"),
]


def full_imports(path: Path, package_parts: tuple[str, ...]) -> list[tuple[int, str]]:
    """(line, dotted module) for every import in a file; relative imports are resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package_parts[: len(package_parts) - node.level + 1]) if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]  # names may be modules
    return found


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def inner_violations(root: Path) -> list[str]:
    problems = []
    for scope, exempt, within, allowed, why in INNER_RULES:
        for path in sorted((root / scope.split(".")[0]).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            importer = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            if not _under(importer, scope) or any(_under(importer, e) for e in exempt):
                continue
            for line, module in full_imports(path, parts[:-1]):
                if _under(module, within) and not any(_under(module, a) for a in allowed):
                    problems.append(f"{path.relative_to(root)}:{line}: {importer} may not import {module} ({why})")
    return problems


def test_packages_import_only_what_design_allows():
    assert violations(ROOT) == []


def test_layers_inside_the_packages_hold():
    assert inner_violations(ROOT) == []


@pytest.mark.parametrize(
    "where,source,expected",
    [
        ("appliance/pipeline.py", "from appliance.api.deps import AppDep\n", "only the API and its server"),
        ("appliance/jobs.py", "from fastapi import HTTPException\n", "HTTP lives in the API layer"),
        ("appliance/storage/store.py", "from appliance.pipeline import Pipeline\n", "storage is the bottom layer"),
        ("connectors/video.py", "from connectors.folder import FolderSource\n", "share only the base"),
        ("tests/appliance/test_x.py", "from tests.appliance.test_api import auth\n", "never each other"),
        ("ui/client.py", "from ui.views import live\n", "pages are not imported"),
    ],
)
def test_inner_checker_catches_forbidden_imports(tmp_path, where, source, expected):
    target = tmp_path / where
    target.parent.mkdir(parents=True)
    target.write_text(source)
    found = inner_violations(tmp_path)
    assert len(found) == 1 and expected in found[0] and found[0].startswith(f"{where}:1")


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
