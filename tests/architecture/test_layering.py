"""The shapes world sits above the library: ``shapes_world`` imports ``wwbl``, never the reverse,
and the ``wwbl`` wheel does not ship it."""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from setuptools import find_packages

REPO = Path(__file__).resolve().parents[2]
LIBRARY = sorted((REPO / "wwbl").rglob("*.py")) + [REPO / "train.py", REPO / "infer.py"]


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports (statements anywhere in it) or names as a string (importlib)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
            found.add(node.value)
    return found


def test_the_scan_sees_imports_inside_functions(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from shapes_world.report import main\n    import shapes_world.generator\n")
    assert {"shapes_world.report", "shapes_world.generator"} <= _imported_modules(probe)


def test_library_never_imports_the_shapes_world():
    assert len(LIBRARY) > 50
    offenders = {str(path.relative_to(REPO)): sorted(m for m in _imported_modules(path) if m.split(".")[0] ==
                                                     "shapes_world")
                 for path in LIBRARY}
    assert {path: modules for path, modules in offenders.items() if modules} == {}


def test_wheel_packages_are_the_library_only():
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = set(find_packages(where=str(REPO), include=include))
    assert {"wwbl", "wwbl.extractors", "wwbl.evaluation"} <= packages
    assert not {p for p in packages if not p.startswith("wwbl")}
    assert (REPO / "shapes_world" / "__init__.py").is_file()  # the sibling package exists, outside the wheel
