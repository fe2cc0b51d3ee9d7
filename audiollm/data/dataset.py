"""Training examples from tokenised sources: records -> task templates -> padded batches.

`TaskData` opens every source's shards (memory-mapped, never loaded whole), tokenises the texts once,
and knows each (stream, record)'s sequence length, so batches can be planned without building them.
Building an example is a pure function of (stream, record, item seed).

Batch keys (B rows padded on the right to the longest row S):
    text, text_target (B, S) int64; audio, audio_target (B, S, K) int64; is_audio, text_mask (B, S) bool;
    audio_mask (B, S, K) bool; task (B,) int64 index into `tasks.TASKS`.
"""

from __future__ import annotations

import numpy as np
import torch

from audiollm import patterns, tasks
from audiollm.data.mixture import Source, Stream, eligible
from audiollm.data.shards import CodeShards
from audiollm.tasks import TemplateOptions
from audiollm.vocab import Vocab


class TaskData:
    """The records of all sources of one split, with their token ids and per-stream eligibility."""

    def __init__(self, sources: list[Source], tokenizer, vocab: Vocab, options: TemplateOptions, split: str):
        self.vocab, self.options, self.tokenizer = vocab, options, tokenizer
        self.shards = [CodeShards(s.path) for s in sources]
        self.frame_rate = self.shards[0].codec["frame_rate"]
        self.records: list[list[dict]] = []
        for src, sh in zip(sources, self.shards, strict=True):
            if (
                sh.codec["num_codebooks"] < vocab.num_codebooks
                or sh.codec["codebook_size"] != vocab.codebook_size
            ):
                raise ValueError(f"{src.path}: codes are {sh.codec}; the model expects {vocab}")
            self.records.append([r for r in sh.records if r.get("split", "train") == split])
        self.ids = [[self._ids(r) for r in recs] for recs in self.records]  # (text ids, caption ids)
        self.speakers = [self._by_speaker(recs) for recs in self.records]
        self.streams, self.skipped = [], {}
        for si, src in enumerate(sources):
            for task, weight in src.tasks.items():
                idx = eligible(self.records[si], task)
                # Never truncate a transcript (asr), nor keep an example with no room for its output audio.
                fits = np.array([self._fits(si, task, int(i)) for i in idx], dtype=bool)
                self.skipped[f"{src.path}:{task} does not fit max_len"] = int((~fits).sum())
                idx = idx[fits] if len(idx) else idx
                if len(idx):
                    self.streams.append(Stream(si, task, idx, weight))
        if not self.streams:
            raise ValueError(f"no {split} records serve any task of the sources {[s.path for s in sources]}")

    def _ids(self, record: dict) -> dict[str, list[int]]:
        """Token ids of the record's text fields that some task reads ("text", "caption")."""
        return {k: self.tokenizer.encode(record[k]) for k in tasks.TEXT_FIELDS if record.get(k)}

    @staticmethod
    def _by_speaker(records: list[dict]) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(records):
            if r.get("speaker"):
                groups.setdefault(r["speaker"], []).append(i)
        return groups

    def steps(self, frames: int) -> int:
        return patterns.get(self.options.pattern).num_steps(frames, self.vocab.num_codebooks)

    def _text(self, source: int, task: tasks.Task, record: int) -> list[int]:
        """The ids of the field `task` reads (empty for a task that reads none)."""
        return self.ids[source][record].get(task.reads, []) if task.reads else []

    def prompt_frames(self, source: int, record: int) -> int:
        """Longest voice prompt of a tts example: `prompt_seconds`, and at most a third of the audio room."""
        if self.options.prompt_prob == 0:
            return 0
        tts = tasks.TABLE["tts"]
        marks = tts.fixed(
            self.vocab, self.options.pattern, len(self._text(source, tts, record)), 1
        ) - self.steps(1)
        fit = tasks.max_frames(
            (self.options.max_len - marks) // 3, self.vocab.num_codebooks, self.options.pattern
        )
        return min(round(self.options.prompt_seconds * self.frame_rate), fit)

    def _fixed(self, source: int, task: str, record: int) -> int:
        """Positions of the template other than its audio steps (asr) or output audio steps (others)."""
        t = tasks.TABLE[task]
        voice = self.prompt_frames(source, record) if t.voice else 0
        return t.fixed(self.vocab, self.options.pattern, len(self._text(source, t, record)), voice)

    def _fits(self, source: int, task: str, record: int) -> bool:
        if tasks.TABLE[task].writes == "text":  # the input audio is never cropped: the whole record must fit
            return self.length(source, task, record) <= self.options.max_len
        return self.out_frames(source, task, record) > 0

    def out_frames(self, source: int, task: str, record: int) -> int:
        """Frames of the record's audio an example keeps: all of them for a task that reads its audio
        (asr), else the record's cropped to what fits in `max_len`."""
        frames = self.records[source][record]["frames"]
        if tasks.TABLE[task].writes == "text":
            return frames
        budget = self.options.max_len - self._fixed(source, task, record)
        return min(frames, tasks.max_frames(budget, self.vocab.num_codebooks, self.options.pattern))

    def length(self, source: int, task: str, record: int) -> int:
        """Positions of the example (an upper bound: a voice prompt may be shorter or absent)."""
        return self._fixed(source, task, record) + self.steps(self.out_frames(source, task, record))

    def codes(self, source: int, record: int) -> torch.Tensor:
        """(K, T) int64 codes of one record (the model's first K codebooks)."""
        codes = self.shards[source].read(self.records[source][record])
        return torch.from_numpy(np.asarray(codes[: self.vocab.num_codebooks], dtype=np.int64))

    def example(self, stream: int, record: int, seed: int) -> tasks.Example:
        """The example of `record` for `self.streams[stream]`; `seed` fixes its crops and dropouts."""
        st, opt = self.streams[stream], self.options
        rng = np.random.default_rng(seed)
        task = tasks.TABLE[st.task]
        voice = self._voice_prompt(st.source, record, rng) if task.voice else None
        codes = tasks.crop(self.codes(st.source, record), self.out_frames(st.source, st.task, record), rng)
        ids = self._text(st.source, task, record)
        if task.captioned and rng.random() < opt.caption_dropout:
            ids = []
        return task.train(self.vocab, opt.pattern, ids, codes, voice).example(task.name)

    def _voice_prompt(self, source: int, record: int, rng: np.random.Generator) -> torch.Tensor | None:
        """Codes (K, Tp) cropped from another utterance of the same speaker, or None."""
        speaker = self.records[source][record].get("speaker")
        others = [i for i in self.speakers[source].get(speaker, []) if i != record] if speaker else []
        if not others or rng.random() >= self.options.prompt_prob or not self.prompt_frames(source, record):
            return None
        other = others[int(rng.integers(len(others)))]
        return tasks.crop(self.codes(source, other), self.prompt_frames(source, record), rng)


def collate(examples: list[tasks.Example], vocab: Vocab) -> dict[str, torch.Tensor]:
    """Pad examples on the right into one batch (see the module docstring for keys and shapes)."""
    B, S, K = len(examples), max(len(e) for e in examples), vocab.num_codebooks
    fills = {
        "text": vocab.pad, "text_target": vocab.pad, "audio": vocab.empty_code, "audio_target": vocab.empty_code,
        "is_audio": False, "text_mask": False, "audio_mask": False,
    }  # fmt: skip
    batch = {}
    for key, fill in fills.items():
        first = getattr(examples[0], key)
        out = torch.full((B, S, *first.shape[1:]), fill, dtype=first.dtype)  # (B, S[, K])
        for b, e in enumerate(examples):
            out[b, : len(e)] = getattr(e, key)
        batch[key] = out
    batch["task"] = torch.tensor([tasks.TASKS.index(e.task) for e in examples])
    assert batch["audio"].shape[-1] == K
    return batch
