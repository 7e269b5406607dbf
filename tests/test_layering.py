"""The package's floors: each module imports only from its own floor or those below (read from the source, ast).

Floors, lowest first: small utilities, layers, backbones, datasets and losses; models; training; evaluation and
saving; the runner; predict. Scripts, benchmarks and tests stand above all of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

FLOORS = {"medattn": 0, "medattn.utils": 0, "medattn.layers": 0, "medattn.backbones": 0, "medattn.datasets": 0,
          "medattn.losses": 0, "medattn.models": 1, "medattn.training": 2, "medattn.evaluation": 3,
          "medattn.saving": 3, "medattn.runner": 4, "medattn.predict": 5}


# the package's front door (``medattn.load_model``, imported only when called) stands above every floor as a
# source; importing ``medattn`` itself is floor 0 (it sets an environment default and nothing else)
FRONT_DOOR = "medattn"


def floor_of(module: str) -> int:
    """The floor of a dotted module name: its longest prefix in FLOORS."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in FLOORS:
            return FLOORS[".".join(parts[:n])]
    raise KeyError(module)


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every medattn import in ``path``, relative ones resolved, at any depth."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not node.module and node.level:  # from . import x: the names may be submodules
                found += [(node.lineno, f"{target}.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, m) for line, m in found if m == "medattn" or m.startswith("medattn.")]


def upward_imports() -> list[str]:
    bad = []
    for path in sorted((REPO / "medattn").rglob("*.py")):
        here = module_name(path)
        if here == FRONT_DOOR:
            continue
        for line, target in imported_modules(path):
            if floor_of(target) > floor_of(here):
                bad.append(f"{path.relative_to(REPO)}:{line} ({here}, floor {floor_of(here)}) imports {target} "
                           f"(floor {floor_of(target)})")
    return bad


def test_no_module_imports_from_a_floor_above_its_own():
    assert upward_imports() == []


def test_the_check_sees_relative_and_nested_imports(tmp_path, monkeypatch):
    """The reader finds an upward import written relative and inside a function (so the test above can fail)."""
    fake = REPO / "medattn" / "layers" / "_layering_probe.py"
    fake.write_text("def f():\n    from ..training.fit import fit\n    return fit\n")
    try:
        assert any("_layering_probe.py:2" in b and "medattn.training.fit" in b for b in upward_imports())
    finally:
        fake.unlink()


# the code that runs every paper's protocol, and the papers' own code: functions of about a screen at most
SHORT_FUNCTIONS = ("reproductions", "medattn/training", "medattn/runner")
MAX_FUNCTION_LINES = 60


def long_functions(roots=SHORT_FUNCTIONS, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``path:line name (N lines)`` for every function under ``roots`` longer than ``limit`` lines."""
    out = []
    for root in roots:
        for path in sorted((REPO / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    if n > limit:
                        out.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_protocol_or_script_function_is_longer_than_a_screen():
    assert long_functions() == []


def test_the_length_check_counts_a_long_function(tmp_path):
    assert long_functions(("tests",), limit=3)  # the helpers of this very file are longer than 3 lines
