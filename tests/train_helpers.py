"""Callbacks that tests name in `audiollm fit` runs they start as subprocesses."""

import hashlib
from pathlib import Path

import lightning as L


class RecordBatches(L.Callback):
    """Write a fingerprint of every training batch a rank reads to <root>/batches_rank<r>.txt."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        digest = hashlib.sha1(batch["text"].numpy().tobytes() + batch["audio"].numpy().tobytes()).hexdigest()
        with open(Path(trainer.default_root_dir) / f"batches_rank{trainer.global_rank}.txt", "a") as f:
            f.write(digest + "\n")
