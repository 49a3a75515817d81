"""The package's shape: one plan object between the API and the samplers, no private names across modules,
short entry points, one seed limit."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sr3infer"


def _modules() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(encoding="utf-8")) for path in sorted(PACKAGE.rglob("*.py"))}


def _defined(tree: ast.Module) -> set[str]:
    """Every name a module binds: functions, classes, variables, attributes, parameters."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_uses_a_private_name_of_another():
    modules = _modules()
    own = {path: _defined(tree) for path, tree in modules.items()}
    package_private = {name for names in own.values() for name in names if _private(name)}
    crossings = []
    for path, tree in modules.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("sr3infer")):
                crossings += [f"{path.name}:{node.lineno} imports {a.name}" for a in node.names if _private(a.name)]
            elif (isinstance(node, ast.Attribute) and _private(node.attr) and node.attr in package_private
                  and node.attr not in own[path]):
                crossings.append(f"{path.name}:{node.lineno} uses {ast.unparse(node)}")
    assert not crossings, crossings


def _body_lines(path: Path, name: str) -> int:
    """Lines of the code of function `name` after its signature and docstring."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            has_docstring = isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
            first = node.body[1] if has_docstring else node.body[0]
            return node.end_lineno - first.lineno + 1
    raise AssertionError(f"{name} not found in {path}")


def test_upscale_and_cascade_run_are_short_steps_over_a_plan():
    assert _body_lines(PACKAGE / "upscaler.py", "upscale") <= 60
    assert _body_lines(PACKAGE / "cascade.py", "run") <= 60
    for path, name in ((PACKAGE / "upscaler.py", "upscale"), (PACKAGE / "cascade.py", "run")):
        source = ast.get_source_segment(path.read_text(encoding="utf-8"), next(
            n for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(n, ast.FunctionDef) and n.name == name))
        assert ".plan(" in source and "# 1." in source and "# 5." in source, name


def test_one_seed_limit():
    def seed_limits(tree: ast.Module) -> list[int]:  # the expressions 2**63 / 2**64 in code, not in text
        return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow)
                and isinstance(node.left, ast.Constant) and node.left.value == 2
                and isinstance(node.right, ast.Constant) and node.right.value in (63, 64)]

    holders = sorted(path.relative_to(PACKAGE).as_posix() for path, tree in _modules().items() if seed_limits(tree))
    assert holders == ["seeding.py"], holders
