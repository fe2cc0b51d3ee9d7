"""Package a trained model directory as a shipped model: half-precision weights, no codec training state.

    python recipes/quickstart/ship.py runs/tiny/model audiollm/assets/tiny

Copies the directory (config, tokenizer, codec), rewrites every `model.safetensors` in float16 (loading
casts back to float32) except tensors with values float16 cannot hold (the codec's latent-norm variance
reaches 1e5: in float16 it became inf and the shipped codec encoded everything as noise), drops the codec's
EMA training buffers, then prints the size. `from_pretrained`
and `load_codec` read the result as they read the original.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from audiollm.codecs.native import TRAINING_BUFFERS


def compact(tensor: torch.Tensor) -> torch.Tensor:
    """float16 when every value fits in float16's range (|x| <= 65504), else the tensor as it is."""
    if not tensor.is_floating_point() or not torch.isfinite(tensor.half()).all():
        return tensor
    return tensor.half()


def ship(model_dir: Path, out: Path) -> int:
    """Copy `model_dir` to `out` with compact weights; returns the total size in bytes. A `MODEL_CARD.md`
    already in `out` is kept when `model_dir` has none (a trained model folder has none; the asset's is
    written by hand)."""
    card = out / "MODEL_CARD.md"
    kept = card.read_bytes() if card.is_file() and not (model_dir / card.name).exists() else None
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(model_dir, out)
    if kept is not None:
        card.write_bytes(kept)
    for weights in out.rglob("model.safetensors"):
        state = {
            k: compact(v) for k, v in load_file(str(weights)).items() if not k.endswith(TRAINING_BUFFERS)
        }
        save_file(state, str(weights))
    return sum(f.stat().st_size for f in out.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, help="a model directory written by `audiollm fit` (…/model)")
    parser.add_argument("out", type=Path, help="where to write the shipped copy (replaced if present)")
    args = parser.parse_args()
    size = ship(args.model_dir, args.out)
    print(f"{args.out}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
