"""Imports only point down the layers of DESIGN.md, and `import audiollm` stays light."""

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "audiollm"

# Module (dotted, relative to audiollm) -> layer. A package entry covers all its submodules.
LAYERS = {
    "audio": 0, "vocab": 0,
    "text": 1, "codecs": 1, "patterns": 1, "model": 1, "quantize": 1,
    "generate": 2, "speculative": 2, "convert": 2, "tasks": 2, "data": 2,
    "train": 3, "api": 3, "eval": 3,
    "compose": 4, "serve": 4, "cli": 4,
}  # fmt: skip
LEAF_PACKAGES = ("data_prep", "recipes", "demos", "bench", "tests")
HEAVY = ("lightning", "pytorch_lightning", "gradio", "librosa", "transformers", "matplotlib")


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "audiollm" or len(parts) == 1:
        return None
    return LAYERS.get(parts[1])


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


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
        for name in imports_of(path):
            if name.split(".")[0] in LEAF_PACKAGES:
                # Only the CLI may load data_prep / demos, lazily, by name.
                if not (rel.parts[0] == "cli" and name.split(".")[0] in ("data_prep", "demos")):
                    bad.append(f"{path.name} imports leaf package {name}")
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
