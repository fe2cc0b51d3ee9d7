"""The timeline picture: one lane per element (start to end, labelled) above the track's waveform."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audiollm.compose.script import ResolvedScript

COLORS = {"speech": "#3b7dd8", "music": "#e0a030", "sfx": "#4caf6a"}
PIXELS = 2000  # waveform columns drawn (min/max envelope per column)


def plot_timeline(script: ResolvedScript, wav: np.ndarray, sample_rate: int, path: str | Path) -> Path:
    """Write a PNG of `script`'s elements over `wav` (N,) or (C, N) float; matplotlib is imported here only."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(script.elements)
    fig = Figure(figsize=(11, 1.5 + 0.4 * n), layout="constrained")
    FigureCanvasAgg(fig)
    lanes, wave = fig.subplots(2, 1, sharex=True, height_ratios=[0.4 * n, 1.5])
    for i, (e, (start, end)) in enumerate(zip(script.elements, script.spans, strict=True)):
        lanes.barh(i, max(end - start, 1e-3), left=start, height=0.7, color=COLORS[e.type], alpha=0.85)
        lanes.text(start + 0.02, i, f" {e.prompt_text}", va="center", fontsize=8, clip_on=True)
    lanes.set_yticks(range(n), [f"{i}: {e.type} ({e.layout[0]}g)" for i, e in enumerate(script.elements)])
    lanes.invert_yaxis()
    lanes.set_title("elements")
    mono = np.atleast_2d(wav).mean(axis=0)
    columns = np.array_split(mono, min(PIXELS, max(len(mono), 1)))
    times = np.linspace(0, len(mono) / sample_rate, len(columns))
    low = [c.min() if len(c) else 0.0 for c in columns]
    high = [c.max() if len(c) else 0.0 for c in columns]
    wave.fill_between(times, low, high, color="#555555", linewidth=0)
    wave.set_ylim(-1, 1)
    wave.set_xlim(0, max(script.duration, 1e-3))
    wave.set_xlabel("seconds")
    wave.set_ylabel("mix")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
