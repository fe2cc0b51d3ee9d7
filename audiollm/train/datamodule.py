"""LightningDataModule over tokenised shards: task mixtures, token-budget batches, exact resume, DDP ranks."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, Dataset

from audiollm.data.dataset import TaskData
from audiollm.data.mixture import Source
from audiollm.data.sampler import BatchPlan, BatchStream
from audiollm.tasks import TemplateOptions
from audiollm.text import load_tokenizer
from audiollm.vocab import DEFAULT_TASKS, Vocab


class _Batches(Dataset):
    """The first n batches of a stream, as a map-style dataset (validation)."""

    def __init__(self, stream: BatchStream, n: int):
        self.stream, self.n = stream, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.stream.batch(i)


class AudioDataModule(L.LightningDataModule):
    """Training batches from `sources` (each: {path: tokenised folder, tasks: {task: weight}}).

    Args:
        sources: tokenised folders and their task weights.
        tokenizer: folder holding the text tokenizer (`tokenizer.model` or `tokenizer.json`).
        tokenizer_kind: "sentencepiece" or "hf".
        num_codebooks: codebooks the model reads (the first K of the codec's; None: all).
        max_len: positions per example.
        pattern: codebook pattern (delay, flatten, parallel).
        caption_dropout: probability of dropping a music/sfx caption (for classifier-free guidance).
        prompt_prob: probability of a voice prompt in a tts example.
        prompt_seconds: longest voice prompt.
        token_budget: rows x longest row per batch.
        window: items sorted together by length before packing.
        seed: seed of the data order.
        valid_batches: batches of the `valid` split evaluated at each validation.
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        sources: list[dict],
        tokenizer: str,
        tokenizer_kind: str = "sentencepiece",
        num_codebooks: int | None = None,
        max_len: int = 1024,
        pattern: str = "delay",
        caption_dropout: float = 0.1,
        prompt_prob: float = 0.5,
        prompt_seconds: float = 3.0,
        token_budget: int = 8192,
        window: int = 256,
        seed: int = 0,
        valid_batches: int = 8,
        num_workers: int = 1,
    ):
        super().__init__()
        self.sources = [Source(**s) for s in sources]
        self.tokenizer = load_tokenizer(tokenizer, tokenizer_kind)
        self.codec = json.loads((Path(self.sources[0].path) / "codec.json").read_text())
        tasks = sorted({t for s in self.sources for t in s.tasks})
        self.vocab = Vocab(
            text_size=self.tokenizer.vocab_size,
            num_codebooks=num_codebooks or self.codec["num_codebooks"],
            codebook_size=self.codec["codebook_size"],
            task_names=DEFAULT_TASKS,
        )
        self.tasks = tasks
        self.options = TemplateOptions(max_len, pattern, caption_dropout, prompt_prob, prompt_seconds)
        self.plan = BatchPlan(token_budget, window, seed)
        self.valid_batches, self.num_workers = valid_batches, num_workers
        self.train_data: TaskData | None = None
        self.valid_data: TaskData | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_data is None:
            self.train_data = TaskData(self.sources, self.tokenizer, self.vocab, self.options, "train")
            try:
                self.valid_data = TaskData(self.sources, self.tokenizer, self.vocab, self.options, "valid")
            except ValueError:  # no valid split in these sources
                self.valid_data = None

    def _loader(self, dataset, workers: int) -> DataLoader:
        return DataLoader(
            dataset, batch_size=None, num_workers=workers, persistent_workers=False, pin_memory=False
        )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        # Loop state is restored before this is called, so a resumed run starts at the next unseen batch.
        start = trainer.global_step * trainer.accumulate_grad_batches if trainer else 0
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        stream = BatchStream(self.train_data, self.plan, rank, world, start)
        return self._loader(stream, self.num_workers)

    def val_dataloader(self) -> DataLoader | list:
        if self.valid_data is None or self.valid_batches == 0:
            return []
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        return self._loader(
            _Batches(BatchStream(self.valid_data, self.plan, rank, world), self.valid_batches), 0
        )
