"""Progress of long training runs as plain lines (terminal or not), and torch threads set from the free cores.

Lightning draws its progress bar only on a terminal; a run logged to a file or CI showed nothing for the
whole of training. `ProgressLog` prints one line every few steps instead:

    step 120/1500 | train/loss 4.213 | valid/loss 4.402 | 8,410 tokens/s | MFU 41.3% | 2m31s elapsed | ~14m left

The LM's throughput is measured by Lightning's `ThroughputMonitor` (`throughput_monitor`), which also logs
it (`train/device/items_per_sec`: token positions per second and device; `train/device/mfu` where the
device's peak FLOPs are known); the line shows those figures. Other recipes report `progress_count`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ThroughputMonitor, Timer

log = logging.getLogger(__name__)
SHOWN = ("train/loss", "valid/loss")
"""metrics a progress line shows when the module logs them"""


TOKENS_PER_SEC, MFU = "train/device/items_per_sec", "train/device/mfu"
"""the ThroughputMonitor metrics a progress line shows (per device)"""


def _rows(batch: dict) -> int:
    return batch["text"].shape[0]


def _positions(batch: dict) -> int:
    return batch["text"].numel()


class TokenThroughput(ThroughputMonitor):
    """Lightning's ThroughputMonitor over LM batches: rows are its samples, token positions (padding
    included) its items, and `LitAudioLM.flops_per_batch` its FLOPs, so it logs tokens/s and MFU.

    Args:
        window: batches in its rolling average (figures appear once that many have run).
        peak_flops: peak FLOP/s of one device, for devices missing from Lightning's table (it knows e.g.
            the H100 and A100, not the H200: 989e12 in bf16 dense); None uses the table. On a CPU the
            peak is unknown and only tokens/s is logged.
    """

    def __init__(self, window: int = 10, peak_flops: float | None = None):
        super().__init__(batch_size_fn=_rows, length_fn=_positions, window_size=window)
        self.peak_flops = peak_flops

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.peak_flops is not None:  # the parent has no argument for it: set it where it keeps it
            for throughput in self._throughputs.values():
                throughput.available_flops = int(self.peak_flops)


def duration(seconds: float) -> str:
    """Seconds as '1h02m', '4m05s' or '12s'."""
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class ProgressLog(L.Callback):
    """Print step, losses, throughput, elapsed and remaining time every `every_n_steps` optimiser steps
    (default: the trainer's `log_every_n_steps`).

    Throughput: tokens/s and MFU per device from the trainer's `ThroughputMonitor` where it has one (the
    LM), else what `pl_module.progress_count(batch) -> (amount, unit)` reports (seconds of audio); the time left is the sooner of `trainer.max_steps` and `trainer.max_time` at the current rate.
    """

    def __init__(self, every_n_steps: int | None = None):
        self.every_n_steps = every_n_steps
        self.started = 0.0
        self.first_step = self.last_step = 0
        self.amount, self.unit = 0.0, ""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.monotonic()
        self.first_step = self.last_step = trainer.global_step
        log.info("training from step %d with %d torch threads", trainer.global_step, torch.get_num_threads())

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: dict, batch_idx: int) -> None:  # fmt: skip
        if hasattr(pl_module, "progress_count"):
            amount, self.unit = pl_module.progress_count(batch)
            self.amount += amount
        step = trainer.global_step
        if (
            step - self.last_step < (self.every_n_steps or trainer.log_every_n_steps)
            or not trainer.is_global_zero
        ):
            return
        self.last_step = step
        print(self.line(trainer, step, time.monotonic() - self.started), flush=True)

    def line(self, trainer: L.Trainer, step: int, elapsed: float) -> str:
        """The progress line for `step`, `elapsed` seconds after this run (or resume) started."""
        parts = [f"step {step}/{trainer.max_steps if trainer.max_steps > 0 else '?'}"]
        metrics = trainer.callback_metrics
        parts += [f"{k} {float(metrics[k]):.3f}" for k in SHOWN if k in metrics]
        measured = trainer.logged_metrics  # what the ThroughputMonitor logged at this step
        if TOKENS_PER_SEC in measured:
            parts.append(f"{float(measured[TOKENS_PER_SEC]):,.0f} tokens/s")
        if MFU in measured:
            parts.append(f"MFU {100 * float(measured[MFU]):.1f}%")
        if self.unit and elapsed > 0:
            rate = self.amount / elapsed
            parts.append(f"{rate:,.0f} {self.unit}/s" if rate >= 100 else f"{rate:.3g} {self.unit}/s")
        parts.append(f"{duration(elapsed)} elapsed")
        left = []
        done = step - self.first_step
        if trainer.max_steps > 0 and done > 0:
            left.append((trainer.max_steps - step) * elapsed / done)
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        if timer is not None and timer.time_remaining() is not None:
            left.append(timer.time_remaining())
        if left:
            parts.append(f"~{duration(max(0.0, min(left)))} left")
        return " | ".join(parts)
