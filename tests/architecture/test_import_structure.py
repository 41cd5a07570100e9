"""The import structure of wwbl: every import at the top of its file, and a ground floor that
imports nothing upstairs. Checked on the source with ``ast`` (nothing is imported)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "wwbl"
# What training, extractors, inference and evaluation all stand on (docs/ARCHITECTURE.md, "Floors").
GROUND_FLOOR = ("wwbl.errors", "wwbl.atomic_files", "wwbl.defaults", "wwbl.cli", "wwbl.devices", "wwbl.images",
                "wwbl.boxes", "wwbl.box_rules", "wwbl.metrics", "wwbl.readers", "wwbl.model_files")
# Imports that must stay inside a function, with the reason (file, imported module) → why.
LAZY_ALLOWED = {
    ("__init__.py", "wwbl.inference.api"): "`import wwbl` stays cheap; `wwbl.load` pulls in torch and CLIP",
    ("extractors/base.py", "wwbl.extractors"): "the package imports base.py, then registers its extractors",
    ("inference/captioner.py", "transformers"): "transformers takes seconds to import; only BLIP needs it",
    ("inference/blip_decoding.py", "transformers"): "transformers takes seconds to import; only BLIP needs it",
    ("inference/blip_convert.py", "transformers"): "transformers takes seconds to import; only BLIP needs it",
    ("evaluation/__main__.py", "wwbl.devices"): "the command parses its flags before torch loads (--help at once)",
    ("evaluation/__main__.py", "wwbl.evaluation.evaluate"): "the command parses its flags before torch loads",
    ("evaluation/__main__.py", "wwbl.evaluation.tables"): "the command parses its flags before torch loads",
    ("boxes.py", "supervision"): "an optional dependency, needed only by Detections.to_supervision",
}


def _modules(package: Path = PACKAGE) -> list[tuple[str, str, ast.Module]]:
    """(path relative to the package, dotted module name, parsed tree) of every module of ``package``."""
    found = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        parts = (package.name, *relative.with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.append((relative.as_posix(), name, ast.parse(path.read_text(encoding="utf-8"))))
    return found


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return [node.module or ""]


def _function_imports(tree: ast.Module) -> list[tuple[int, str]]:
    out = []
    for func in ast.walk(tree):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out += [(node.lineno, name) for node in ast.walk(func) if isinstance(node, (ast.Import, ast.ImportFrom))
                    for name in _imported(node)]
    return out


def _is_ground_floor(module: str) -> bool:
    return any(module == floor or module.startswith(floor + ".") for floor in GROUND_FLOOR)


def test_every_import_is_at_the_top_of_its_file():
    found = {(path, line, name) for path, _, tree in _modules() for line, name in _function_imports(tree)}
    lazy = {(path, line, name) for path, line, name in found
            if any(path == file and (name == allowed or name.startswith(allowed + "."))
                   for file, allowed in LAZY_ALLOWED)}
    assert sorted(found - lazy) == []
    unused = {key for key in LAZY_ALLOWED if not any((p, n) == key or (p == key[0] and n.startswith(key[1] + "."))
                                                     for p, _, n in found)}
    assert unused == set(), "allow-list entries without a lazy import left: remove them"


def test_the_shapes_world_imports_at_the_top_too():
    found = [(path, line, name) for path, _, tree in _modules(ROOT / "shapes_world")
             for line, name in _function_imports(tree)]
    assert found == []


def test_the_ground_floor_imports_nothing_upstairs():
    upward = []
    for path, name, tree in _modules():
        if not _is_ground_floor(name):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                upward += [(path, target) for target in _imported(node)
                           if (target == "wwbl" or target.startswith("wwbl.")) and not _is_ground_floor(target)]
    assert upward == []


def test_the_checks_see_a_violation():
    # The walkers must be able to fail: a lazy import and an upward arrow in a made-up module.
    tree = ast.parse("from wwbl.inference.api import load\n\ndef f():\n    import numpy\n")
    assert _function_imports(tree) == [(4, "numpy")]
    assert not _is_ground_floor("wwbl.inference.api") and _is_ground_floor("wwbl.readers.cub")
    assert all(_is_ground_floor(floor) for floor in GROUND_FLOOR)
