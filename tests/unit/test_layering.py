"""Arrows point down: contracts import nothing of ours, services never import the command line.

Every module is parsed (not imported), so an import hidden inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_packages(path: Path) -> set[str]:
    """The top-level package of every absolute import in the module at ``path``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def offenders(package: str, forbidden: set[str]) -> list[str]:
    return sorted(
        f"{path.relative_to(ROOT)} imports {', '.join(sorted(bad))}"
        for path in (ROOT / package).rglob("*.py")
        if (bad := imported_packages(path) & forbidden)
    )


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("contracts", {"services", "cityhall", "bench"}),
        ("services", {"cityhall", "bench"}),
    ],
)
def test_imports_point_down(package: str, forbidden: set[str]) -> None:
    assert offenders(package, forbidden) == []


def test_the_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from cityhall.stack import LocalExtras\n    import services\n")
    assert imported_packages(module) >= {"cityhall", "services"}
