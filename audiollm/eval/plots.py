"""Pictures people would rather look at than read: loss curves from a run's CSV log, and spectrograms.

matplotlib is imported inside each function (Agg backend, no display needed), so importing this is free.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from audiollm.codecs.losses import LogMel

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | Path, **options: Any) -> Path:
    """Write matplotlib figure `fig` as a PNG at `path` (parent folders made, 100 dpi); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, **options)
    return path


def read_curves(metrics_csv: str | Path, keys: tuple[str, ...]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) pairs of each of `keys` in a Lightning CSVLogger `metrics.csv` (rows without it skipped)."""
    curves: dict[str, list[tuple[int, float]]] = {k: [] for k in keys}
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            for k in keys:
                if row.get(k):
                    curves[k].append((int(row["step"]), float(row[k])))
    return curves


def loss_curves(
    metrics_csv: str | Path, path: str | Path, keys: tuple[str, ...] = ("train/loss", "valid/loss")
) -> Path:
    """Write a PNG of `keys` against step from `metrics_csv`; raise ValueError when none was logged."""
    curves = {k: v for k, v in read_curves(metrics_csv, keys).items() if v}
    if not curves:
        raise ValueError(f"{metrics_csv}: none of {list(keys)} was logged")
    fig = _figure(7, 4)
    ax = fig.add_subplot()
    for key, points in curves.items():
        steps, values = zip(*points, strict=True)
        ax.plot(steps, values, marker="o" if len(points) < 30 else None, label=key)
    ax.set(xlabel="step", ylabel="loss", title=Path(metrics_csv).parent.name)
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path, bbox_inches="tight")


def spectrograms(clips: dict[str, tuple[torch.Tensor | np.ndarray, int]], path: str | Path) -> Path:
    """Write a PNG of log-mel spectrograms, one panel per titled clip (wav (C, N) or (N,) float, tensor or
    numpy, and its sample rate); a clip shorter than one window (an empty generation) is drawn as silence."""
    fig = _figure(8, 2.2 * len(clips))
    for i, (title, (wav, sr)) in enumerate(clips.items()):
        x = torch.as_tensor(np.asarray(wav, dtype=np.float32))
        mono = x.reshape(-1, x.shape[-1]).mean(0) if x.numel() else x.new_zeros(0)  # (N,)
        mono = torch.nn.functional.pad(mono, (0, max(0, 1024 - mono.shape[-1])))
        mel = LogMel(sr, n_fft=1024, hop_length=256, n_mels=80)(mono[None])[0].numpy()  # (80, frames)
        ax = fig.add_subplot(len(clips), 1, i + 1)
        seconds = mono.shape[-1] / sr
        ax.imshow(mel, origin="lower", aspect="auto", extent=(0, seconds, 0, 80), vmin=math.log(1e-5))
        ax.set(title=title, ylabel="mel band")
    ax.set_xlabel("seconds")
    fig.tight_layout()
    return save(fig, path)
