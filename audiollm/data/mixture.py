"""Task mixtures: which (source, task) pairs feed training, with what weight, and which records serve each.

A source is a tokenised folder (`audiollm tokenize`) and the tasks drawn from it with their weights, e.g.
`{"path": "runs/tok/speech", "tasks": {"asr": 1.0, "tts": 1.0}}`. A record serves a task when it has
what the task needs (a transcript for asr/tts, a caption for music/sfx) and, for asr, fits the context.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from audiollm.tasks import TABLE, get


@dataclass
class Source:
    """A tokenised folder and the tasks drawn from it: `tasks` maps task name -> weight (> 0)."""

    path: str
    tasks: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for task, weight in self.tasks.items():
            if task not in TABLE:
                raise ValueError(f"source {self.path}: unknown task {task!r}; known: {', '.join(TABLE)}")
            if not weight > 0:
                raise ValueError(f"source {self.path}: weight of {task} must be > 0, got {weight}")


@dataclass
class Stream:
    """One (source, task) pair: the eligible record indices and the pair's share of draws."""

    source: int
    task: str
    records: np.ndarray  # (N,) int64 indices into the source's records
    weight: float


def eligible(records: list[dict], task: str) -> np.ndarray:
    """Indices of records that carry what `task` needs."""
    need = get(task).reads
    return np.array([i for i, r in enumerate(records) if need is None or r.get(need)], dtype=np.int64)


def draw(streams: list[Stream], n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n draws: (stream index (n,), record index (n,)). Streams by weight, records uniformly within a stream."""
    weights = np.array([s.weight for s in streams], dtype=np.float64)
    which = rng.choice(len(streams), size=n, p=weights / weights.sum())
    recs = np.empty(n, dtype=np.int64)
    for i, s in enumerate(streams):
        hit = which == i
        recs[hit] = s.records[rng.integers(0, len(s.records), size=int(hit.sum()))]
    return which, recs
