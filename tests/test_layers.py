"""Imports only point down the layers of DESIGN.md, the leaves beside audiollm import only what it allows,
no modules import each other in a circle, and `import audiollm` stays light."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "audiollm"

# Module (dotted, relative to audiollm) -> layer. A package entry covers all its submodules.
LAYERS = {
    "audio": 0, "vocab": 0, "files": 0, "threads": 0,
    "text": 1, "codecs": 1, "patterns": 1, "model": 1, "quantize": 1,
    "generate": 2, "speculative": 2, "convert": 2, "tasks": 2, "checkpoint": 2, "data": 2,
    "train": 3, "api": 3, "eval": 3,
    "compose": 4, "serve": 4, "cli": 4,
}  # fmt: skip
# Folders beside audiollm: they import it, it does not import them (but for CLI_LOADS, in a command).
LEAVES = ("data_prep", "recipes", "demos", "bench")
LEAF_PACKAGES = (*LEAVES, "tests")
CLI_LOADS = ("data_prep", "demos", "recipes")
# Leaf -> the other leaves it may import; demos/ uses only the PUBLIC_API of audiollm (and compose's modules).
LEAF_IMPORTS = {"data_prep": (), "demos": (), "recipes": ("data_prep",), "bench": ("data_prep",)}
PUBLIC_API = ("audiollm", "audiollm.api", "audiollm.audio", "audiollm.compose")
HEAVY = ("lightning", "pytorch_lightning", "gradio", "librosa", "transformers", "matplotlib")


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "audiollm" or len(parts) == 1:
        return None
    return LAYERS.get(parts[1])


def module_name(path: Path) -> str:
    """The dotted name of the module a file under ROOT is (a package's __init__.py is the package)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[str, bool]]:
    """(name, lazy) of every import in `path`, those under `if TYPE_CHECKING:` too: `import a.b` is "a.b",
    `from a import b` is "a.b" (a module, or a name that a's __init__ exports), a relative import is made
    absolute; lazy: inside a function."""
    tree = ast.parse(path.read_text(), filename=str(path))
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    inside = {id(n) for f in ast.walk(tree) if isinstance(f, functions) for n in ast.walk(f) if n is not f}
    package = module_name(path).split(".")[: None if path.name == "__init__.py" else -1]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(a.name, id(node) in inside) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) + 1 - node.level] if node.level else []
            base += [node.module] if node.module else []
            names += [(".".join([*base, a.name]), id(node) in inside) for a in node.names]
    return names


def resolve(name: str, modules: set[str]) -> str | None:
    """The module of `modules` that importing `name` loads: its longest dotted prefix found there."""
    parts = name.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts) or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules it imports, over audiollm/ and the leaves (not tests/)."""
    paths = {module_name(p): p for top in ("audiollm", *LEAVES) for p in sorted((ROOT / top).rglob("*.py"))}
    graph = {}
    for module, path in paths.items():
        targets = {resolve(name, set(paths)) for name, _ in imports_of(path)}
        graph[module] = targets - {None, module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle [a, b, ..., a] per back edge that a depth-first search of `graph` meets."""
    found, done, path = [], set(), []

    def visit(node: str) -> None:
        path.append(node)
        for other in sorted(graph[node]):
            if other in path:
                found.append([*path[path.index(other) :], other])
            elif other not in done:
                visit(other)
        path.pop()
        done.add(node)

    for node in sorted(graph):
        if node not in done:
            visit(node)
    return found


def test_every_module_has_a_layer():
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).with_suffix("")
        if rel.parts == ("__init__",):
            continue
        assert rel.parts[0] in LAYERS, f"{path}: add '{rel.parts[0]}' to LAYERS (and to DESIGN.md)"


def test_imports_point_down():
    bad = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).with_suffix("")
        if rel.parts == ("__init__",):
            continue
        own = LAYERS[rel.parts[0]]
        for name, lazy in imports_of(path):
            if name.split(".")[0] in LEAF_PACKAGES:
                # Only the CLI may load data_prep / demos / recipes, lazily (inside a command), by name.
                if not (rel.parts[0] == "cli" and name.split(".")[0] in CLI_LOADS and lazy):
                    bad.append(
                        f"{path.name} imports leaf package {name}" + ("" if lazy else " at import time")
                    )
                continue
            other = layer_of(name)
            same_pkg = len(name.split(".")) > 1 and name.split(".")[1] == rel.parts[0]
            if other is not None and other > own and not same_pkg:
                bad.append(f"audiollm/{'/'.join(rel.parts)} (L{own}) imports {name} (L{other})")
            if name.split(".")[0] in ("lightning", "pytorch_lightning") and rel.parts[0] != "train":
                bad.append(
                    f"audiollm/{'/'.join(rel.parts)} imports {name}: lightning belongs to audiollm.train"
                )
    assert not bad, "\n".join(bad)


def test_import_audiollm_is_light():
    code = (
        "import sys, audiollm, audiollm.cli, audiollm.codecs\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "", f"heavy modules imported by `import audiollm`: {out.strip()}"


def test_leaves_import_only_what_design_allows():
    """A leaf imports audiollm but never its CLI (demos/: only the public API), itself, and of the other leaves
    only its LEAF_IMPORTS: nothing imports tests/ or bench/ but themselves."""
    bad = []
    for path in (p for leaf in LEAVES for p in sorted((ROOT / leaf).rglob("*.py"))):
        rel = path.relative_to(ROOT)
        leaf = rel.parts[0]
        for name, _ in imports_of(path):
            top = name.split(".")[0]
            if top in LEAF_PACKAGES and top not in (leaf, *LEAF_IMPORTS[leaf]):
                bad.append(
                    f"{rel} imports {name}: of the other leaves, {leaf}/ may import {LEAF_IMPORTS[leaf]}"
                )
            elif name == "audiollm.cli" or name.startswith("audiollm.cli."):
                bad.append(f"{rel} imports {name}: leaves import the library, never the CLI")
            elif leaf == "demos" and top == "audiollm":
                module = resolve(name, {module_name(p) for p in PKG.rglob("*.py")})
                if module not in PUBLIC_API and not module.startswith("audiollm.compose."):
                    bad.append(f"{rel} imports {name}: the demos use the public API {PUBLIC_API}")
    assert not bad, "\n".join(bad)


def test_no_import_circles():
    """No module of audiollm/ or the leaves imports itself through others, counting the imports inside
    functions (the CLI's lazy ones too) and under TYPE_CHECKING, and package __init__ re-exports."""
    graph = import_graph()
    assert {m.split(".")[0] for m in graph} == {"audiollm", *LEAVES}
    assert "recipes.quickstart.pipeline" in graph["audiollm.cli"], "the CLI's lazy import of a recipe is seen"
    found = cycles(graph)
    assert not found, "import circles:\n" + "\n".join(" -> ".join(c) for c in found)
