"""What an evaluation found, shared by asr / tts / codec / music / sfx: a printed table and a JSON file.

A `Report` holds summary rows (one per system compared, e.g. the model and a reference), the
per-item rows they were averaged from, and notes on what was skipped or could not be measured.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from audiollm.files import atomic_write

Row = dict[str, object]


@dataclass
class Report:
    """Summary rows (one per system) over `items` (one row per evaluated item), with notes and settings."""

    task: str
    summary: list[Row]
    items: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    settings: dict[str, object] = field(default_factory=dict)

    def table(self) -> str:
        """The summary rows as an aligned text table, then the notes."""
        lines = [f"{self.task}: {len(self.items)} items", format_table(self.summary)]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])

    def write(self, path: str | Path) -> Path:
        """Write the whole report as JSON (undefined numbers as null), atomically; returns the path."""
        path = Path(path)
        with atomic_write(path, "w") as f:
            f.write(json.dumps(_finite(asdict(self)), indent=2, ensure_ascii=False) + "\n")
        return path


def format_table(rows: Sequence[Row]) -> str:
    """Rows of the same keys as a table: a header line, then one line per row; floats to 4 digits."""
    if not rows:
        return "(no rows)"
    columns = list(dict.fromkeys(k for row in rows for k in row))
    cells = [columns] + [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)) for line in cells)


def mean(values: Sequence[float | None]) -> float | None:
    """Mean of the defined, finite values (None when there are none)."""
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return sum(kept) / len(kept) if kept else None


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _finite(obj: object) -> object:
    """Replace NaN / infinity (not valid JSON) by None, recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
