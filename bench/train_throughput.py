"""Training tokens/s of an LM recipe on this machine, and the data loader's tokens/s alone.

Positions (tokens) per second = rows x padded length of each batch, as the model sees them. The data
loader must outrun training by 10x so it is never the bottleneck. Prints one line each and the ratio.

    python -m bench.train_throughput --tok runs/quickstart/tok/speech --tokenizer runs/quickstart/tokenizer \
        [--config recipes/quickstart/config.yaml] [--steps 20] [--num-codebooks 6]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning as L
import yaml

from audiollm.train.datamodule import AudioDataModule
from audiollm.train.module import LitAudioLM


class StepTimer(L.Callback):
    """Wall time and positions of every training step after the first `skip` (warm-up)."""

    def __init__(self, skip: int = 2):
        self.skip, self.tokens, self.seconds, self._t = skip, 0, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx >= self.skip:
            self.seconds += time.perf_counter() - self._t
            self.tokens += batch["text"].numel()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="recipes/quickstart/config.yaml")
    ap.add_argument("--tok", required=True, help="a tokenised folder (audiollm tokenize)")
    ap.add_argument("--tokenizer", required=True, help="a SentencePiece tokenizer folder")
    ap.add_argument("--num-codebooks", type=int, default=None)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--loader-batches", type=int, default=200)
    args = ap.parse_args()

    config = yaml.safe_load(Path(args.config).read_text())
    data_args = dict(config["data"])
    tasks = {t: w for s in data_args.pop("sources") for t, w in s["tasks"].items()}
    data_args |= {"tokenizer": args.tokenizer, "num_codebooks": args.num_codebooks, "valid_batches": 0}
    dm = AudioDataModule([{"path": args.tok, "tasks": tasks}], **data_args)
    dm.setup()

    from audiollm.data.sampler import BatchStream

    stream = BatchStream(dm.train_data, dm.plan)
    next(iter(stream))
    t, tokens = time.perf_counter(), 0
    for _, batch in zip(range(args.loader_batches), stream, strict=False):
        tokens += batch["text"].numel()
    loader = tokens / (time.perf_counter() - t)
    print(f"data loader (1 process): {loader:,.0f} tokens/s over {args.loader_batches} batches")

    model = LitAudioLM(vocab=dm.vocab.to_dict(), **{k: v for k, v in config["model"].items()})
    timer = StepTimer()
    trainer_args = {
        k: v for k, v in config["trainer"].items() if k not in ("default_root_dir", "val_check_interval")
    }
    trainer = L.Trainer(
        **trainer_args | {"max_steps": args.steps, "logger": False, "enable_checkpointing": False,
                          "limit_val_batches": 0, "enable_progress_bar": False, "callbacks": [timer]},
    )  # fmt: skip
    dm.num_workers = 0
    trainer.fit(model, datamodule=dm)
    train = timer.tokens / timer.seconds
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"train {config['model'].get('preset')} ({params:.1f} M params, {trainer_args['precision']}): "
          f"{train:,.0f} tokens/s over {args.steps - timer.skip} steps")  # fmt: skip
    print(f"train data loader vs training: ratio={loader / train:.1f} (must be >= 10)")


if __name__ == "__main__":
    main()
