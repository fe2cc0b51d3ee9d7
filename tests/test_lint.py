"""The tree stays ruff-clean (lint and format), as CI would otherwise let drift in."""

import ast
import subprocess
import sys

from tests.conftest import REPO


def test_ruff_check_and_format():
    for args in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *args], cwd=REPO, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]


def _functions(tree: ast.AST) -> list[tuple[ast.FunctionDef | ast.AsyncFunctionDef, bool]]:
    """Every function with whether it is public: its name and every enclosing class's are public, and it is
    not nested in another function."""
    found = []

    def visit(node: ast.AST, public: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                found.append((child, public and not child.name.startswith("_")))
                visit(child, False)
            elif isinstance(child, ast.ClassDef):
                visit(child, public and not child.name.startswith("_"))
            else:
                visit(child, public)

    visit(tree, True)
    return found


def test_package_functions_are_short_and_public_ones_typed():
    """STYLE.md: a function fits on a screen (about 60 lines); every public signature is typed."""
    long, untyped = [], []
    for path in sorted((REPO / "audiollm").rglob("*.py")):
        for fn, public in _functions(ast.parse(path.read_text())):
            where = f"{path.relative_to(REPO)}:{fn.lineno} {fn.name}"
            if fn.end_lineno - fn.lineno + 1 > 60:
                long.append(f"{where} ({fn.end_lineno - fn.lineno + 1} lines)")
            params = [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs, fn.args.vararg, fn.args.kwarg]
            params = [a for a in params if a is not None and a.arg not in ("self", "cls")]
            missing = any(a.annotation is None for a in params) or (
                fn.returns is None and fn.name != "__init__"
            )
            if public and missing:
                untyped.append(where)
    assert not long, "functions over 60 lines:\n" + "\n".join(long)
    assert not untyped, "public functions without full type hints:\n" + "\n".join(untyped)
