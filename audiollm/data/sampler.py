"""Token-budget batches in an order that is a pure function of (seed, epoch, step).

An epoch draws as many items as the streams hold records (streams by weight, records uniformly), sorts
each window of items by length and packs them into batches whose padded size (rows x longest row) stays
within `token_budget`, then shuffles the batches. Global batch g of a run is batch j of epoch e, found
by counting; rank r of a world of W reads global batches r, r + W, r + 2W, ... so ranks never share data,
and a run resumed at step n starts again at exactly the batch it would have read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from audiollm.data import mixture
from audiollm.data.dataset import TaskData, collate


@dataclass(frozen=True)
class BatchPlan:
    token_budget: int = 8192  # rows x longest row per batch
    window: int = 256  # items sorted together by length before packing
    seed: int = 0


def plan_epoch(data: TaskData, plan: BatchPlan, epoch: int) -> list[np.ndarray]:
    """Batches of one epoch, each an (n, 3) int64 array of (stream, record, item seed)."""
    rng = np.random.default_rng([plan.seed, epoch])
    n = sum(len(s.records) for s in data.streams)
    which, recs = mixture.draw(data.streams, n, rng)
    seeds = rng.integers(0, 2**62, size=n)
    lengths = np.array(
        [
            data.length(data.streams[w].source, data.streams[w].task, int(r))
            for w, r in zip(which, recs, strict=True)
        ]
    )
    items = np.stack([which, recs, seeds], axis=1)  # (n, 3)
    batches = []
    for start in range(0, n, plan.window):
        order = start + np.argsort(lengths[start : start + plan.window], kind="stable")
        batch: list[int] = []
        for i in order:
            if batch and max(lengths[batch].max(), lengths[i]) * (len(batch) + 1) > plan.token_budget:
                batches.append(items[batch])
                batch = []
            batch.append(int(i))
        if batch:
            batches.append(items[batch])
    return [batches[i] for i in rng.permutation(len(batches))]


class BatchStream(IterableDataset):
    """An endless stream of collated batches for one rank, starting at its `start`-th batch.

    With DataLoader workers, worker w of N builds this rank's batches start + w, start + w + N, ...;
    the DataLoader's round-robin order puts them back in sequence.
    """

    def __init__(self, data: TaskData, plan: BatchPlan, rank: int = 0, world: int = 1, start: int = 0):
        self.data, self.plan, self.rank, self.world, self.start = data, plan, rank, world, start
        self._epochs: dict[int, list[np.ndarray]] = {}

    def global_batch(self, g: int) -> np.ndarray:
        """Items of global batch g."""
        epoch = 0
        while True:
            if epoch not in self._epochs:
                self._epochs[epoch] = plan_epoch(self.data, self.plan, epoch)
            if g < len(self._epochs[epoch]):
                return self._epochs[epoch][g]
            g -= len(self._epochs[epoch])
            epoch += 1

    def batch(self, i: int) -> dict[str, torch.Tensor]:
        """This rank's i-th batch, collated."""
        items = self.global_batch(i * self.world + self.rank)
        return collate(
            [self.data.example(int(s), int(r), int(seed)) for s, r, seed in items], self.data.vocab
        )

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        i = self.start + worker
        while True:
            yield self.batch(i)
            i += workers
