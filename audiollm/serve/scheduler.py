"""Continuous batching (iteration-level scheduling, as in Orca and vLLM) over a fixed pool of KV-cache rows.

Every scheduler step: drop cancelled jobs, prefill arriving jobs into free rows (up to a budget of
prompt positions, so prefill is interleaved with decoding), choose each running job's next token from its
logits, then run ONE `decode_step` for all running rows together. A job joins the batch at the step after
it arrives and leaves at the step it ends; nobody waits for anyone else to finish.

Rows of the pool (per layer: keys and values (R_max, n_kv_head, max_len, head_dim)) are kept dense: the
running rows are [0, R), so a step reads `keys[:R]` as a view. A finished job's rows are refilled by moving
the last rows down. Each row has its own length: a step writes row r's new key at slot pos[r], with RoPE
position pos[r], and masks the slots past it. A lone row runs exactly as `generate` does (no mask).
A guided job (classifier-free guidance) holds two rows, conditional and unconditional, fed the same tokens.

Jobs are decoded as `generate` decodes one row (the same masks for text and audio steps, the same
pattern steps), with their own `torch.Generator`, so a job's result does not depend on what it shares
a batch with: greedy results under load equal results alone.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from audiollm.generate import Sampling, _rules, decode_step, prefill, sample
from audiollm.model import AudioLanguageModel, KVCache, rope
from audiollm.tasks import Prompt, Template


class QueueFull(Exception):
    """The waiting queue is at its bound; retry after `retry_after` seconds."""

    def __init__(self, retry_after: int):
        self.retry_after = retry_after
        super().__init__(f"the server's queue is full; retry in {retry_after} s")


@dataclass
class Job:
    """One generation: a prompt (and for guidance an unconditional twin) and its stopping rules."""

    prompt: Prompt
    start_audio: bool  # the first generated step is an audio step (TTS, music, sfx) or text (ASR)
    max_new: int  # most steps to write
    min_new: int = 0  # `<eos>` may end the job only after this many steps
    sampling: Sampling = field(default_factory=lambda: Sampling(temperature=0.0))
    seed: int | None = None  # seeds the job's own generator (None: the global RNG)
    uncond: Prompt | None = None  # classifier-free guidance when given
    guidance: float = 3.0
    stream: bool = False  # report each audio step to `on_event` as it is written
    on_event: Callable[[str, object], None] | None = None  # (kind, payload): "audio" (K,), "done", "error"
    # state, owned by the scheduler thread
    text: list[int] = field(default_factory=list)  # ids of text steps, `<eos>` excluded
    audio: list[torch.Tensor] = field(default_factory=list)  # (K,) codes of each audio step
    rows: list[int] = field(default_factory=list)  # pool rows: [cond] or [cond, uncond]
    pos: list[int] = field(default_factory=list)  # per row: the next cache slot to write
    in_audio: bool = False
    audio_step: int = 0
    tail: int = 0  # steps of the pattern's tail written since the job chose to end (see `generate`)
    steps: int = 0
    logits: tuple | None = None  # text (n_rows, V), audio (n_rows, K, C) or None: awaiting `_choose`
    last: tuple | None = None  # text id, is_audio, codes (K,): the next input of the job's rows
    cancelled: bool = False
    finished: bool = False
    submitted: float = 0.0
    deadline: float = float("inf")  # time.monotonic() past which the scheduler drops the job
    generator: torch.Generator | None = None

    @property
    def n_rows(self) -> int:
        return 1 if self.uncond is None else 2

    def cancel(self) -> None:
        """Ask the scheduler to drop the job; its rows are freed at the next step (thread-safe)."""
        self.cancelled = True

    def audio_steps(self) -> torch.Tensor:
        """(S, K) int64 codes of the audio steps written so far."""
        return torch.stack(self.audio) if self.audio else torch.empty(0, 0, dtype=torch.long)


class _RowsView:
    """KV cache of pool rows [r0, r0 + n), written at slots [start, start + S) (prefill)."""

    def __init__(self, pool: KVCache, r0: int, n: int):
        self.pool, self.r0, self.n = pool, r0, n

    def update(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        keys, values = self.pool.layers[layer]
        rows = slice(self.r0, self.r0 + self.n)
        keys[rows, :, start : start + k.shape[2]] = k  # k: (n, nkv, S, hd)
        values[rows, :, start : start + v.shape[2]] = v
        return keys[rows], values[rows]


class _StepView:
    """KV cache of pool rows [0, R) for one decode step: row r's key goes to its own slot pos[r]."""

    def __init__(self, pool: KVCache, pos: torch.Tensor):
        self.pool, self.pos = pool, pos  # pos: (R,) int64
        self.rows = torch.arange(len(pos), device=pos.device)

    def update(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        keys, values = self.pool.layers[layer]
        keys[self.rows, :, self.pos] = k[:, :, 0]  # (R, nkv, hd) into (R_max, nkv, L, hd)
        values[self.rows, :, self.pos] = v[:, :, 0]
        R = len(self.pos)
        return keys[:R], values[:R]


class Scheduler:
    """A thread that runs jobs on `model` with continuous batching; `submit` from any thread."""

    def __init__(
        self,
        model: AudioLanguageModel,
        pattern: str,
        max_len: int,
        max_batch: int = 16,
        max_queue: int = 64,
        prefill_budget: int = 1024,
        on_step: Callable[[int, int], None] | None = None,
        on_cancel: Callable[[], None] | None = None,
    ):
        """max_len: cache slots per row (the model's context); max_batch: most jobs running together
        (the pool has room for each to be guided: 2 * max_batch rows); on_step(jobs, rows) after each decode
        step and on_cancel() for each cancelled job: metrics hooks."""
        self.model, self.pattern, self.max_len = model, pattern, max_len
        self.max_batch, self.max_queue, self.prefill_budget = max_batch, max_queue, prefill_budget
        self.vocab = model.config.vocab
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.pool = KVCache(model.config, 2 * max_batch, max_len, self.dtype, self.device)
        # What a step may write: `generate`'s rules for a plain template. bias[in_audio][eos_ok]: (2, 2, V)
        self.rules = r = _rules(
            self.vocab, Template(), self.vocab.num_codebooks, pattern, max_len, self.device
        )
        self.bias = torch.stack([torch.stack([m + r.no_eos, m]) for m in (r.text_mode, r.audio_mode)])
        self.empty = torch.full(
            (self.vocab.num_codebooks,), r.empty_code, dtype=torch.long, device=self.device
        )
        self.waiting: deque[Job] = deque()
        self.running: list[Job] = []
        self.on_step, self.on_cancel = on_step, on_cancel
        self.mean_job_seconds = 1.0  # running mean, for Retry-After
        self.peak_batch = 0  # most jobs one decode step has run
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    # ---- the public side (any thread) ----------------------------------------------------------------
    def start(self) -> None:
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="audiollm-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread; waiting and running jobs end with an error."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for job in [*self.waiting, *self.running]:
            self._fail(job, "the server is shutting down")
        self.waiting.clear()
        self.running.clear()

    def submit(self, jobs: list[Job]) -> None:
        """Queue jobs together, or none of them: raises QueueFull when they do not all fit."""
        for job in jobs:
            if len(job.prompt.text) + job.max_new > self.max_len:
                raise ValueError(
                    f"prompt ({len(job.prompt.text)}) + steps ({job.max_new}) exceed {self.max_len}"
                )
        with self._cond:
            if len(self.waiting) + len(jobs) > self.max_queue:
                raise QueueFull(self.retry_after())
            now = time.monotonic()
            for job in jobs:
                job.submitted = now
                self.waiting.append(job)
            self._cond.notify()

    def retry_after(self) -> int:
        """Seconds until the queue has likely moved by one batch (at least 1)."""
        return max(1, round(self.mean_job_seconds * (1 + len(self.waiting) / self.max_batch)))

    @property
    def queue_length(self) -> int:
        return len(self.waiting)

    @property
    def batch_size(self) -> int:
        return len(self.running)

    @property
    def free_rows(self) -> int:
        return len(self.pool.layers[0][0]) - sum(j.n_rows for j in self.running)

    # ---- the scheduler thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._stop and not self.waiting and not self.running:
                        self._cond.wait()
                    if self._stop:
                        return
                try:
                    self.step()
                except Exception as e:  # a failed batch fails its jobs, never the server
                    for job in self.running:
                        self._fail(job, f"generation failed: {e}")
                    self.running.clear()

    @torch.inference_mode()
    def step(self) -> None:
        """One scheduler iteration: reap, admit (prefill), choose, decode."""
        self._reap()
        self._admit()
        ready = [j for j in self.running if j.logits is not None]
        if ready:
            self._choose(ready)
        self._reap()
        if self.running:
            self._decode()

    def _reap(self) -> None:
        """Free the rows of finished and cancelled jobs, keeping the running rows dense."""
        now = time.monotonic()
        for job in self.running:
            job.cancelled |= now > job.deadline
        keep = [j for j in self.running if not (j.finished or j.cancelled)]
        if len(keep) == len(self.running):
            return
        for job in self.running:
            if job.cancelled and not job.finished:
                self._cancelled(job)
        self.running = keep
        row = 0
        for job in keep:
            for i, src in enumerate(job.rows):
                if src != row:
                    n = job.pos[i]
                    for keys, values in self.pool.layers:
                        keys[row, :, :n] = keys[src, :, :n]
                        values[row, :, :n] = values[src, :, :n]
                    job.rows[i] = row
                row += 1

    def _admit(self) -> None:
        """Prefill waiting jobs into free rows, oldest first, within the prefill budget."""
        budget = self.prefill_budget
        while True:
            with self._cond:
                now = time.monotonic()
                if any(j.cancelled or now > j.deadline for j in self.waiting):  # gone clients leave the queue
                    for j in self.waiting:
                        if j.cancelled or now > j.deadline:
                            self._cancelled(j)
                    self.waiting = deque(j for j in self.waiting if not (j.cancelled or now > j.deadline))
                if not self.waiting or len(self.running) >= self.max_batch:
                    return
                job = self.waiting[0]
                cost = len(job.prompt.text) + (len(job.uncond.text) if job.uncond is not None else 0)
                if job.n_rows > self.free_rows or (cost > budget and budget < self.prefill_budget):
                    return
                self.waiting.popleft()
            budget -= cost
            try:
                self._prefill(job)
            except Exception as e:
                self._fail(job, f"prefill failed: {e}")
                continue
            self.running.append(job)

    def _prefill(self, job: Job) -> None:
        """Run the job's prompt(s) into its rows; its logits wait for `_choose`."""
        first = sum(j.n_rows for j in self.running)
        job.rows = list(range(first, first + job.n_rows))
        job.in_audio = job.start_audio
        if job.seed is not None:
            job.generator = torch.Generator(self.device).manual_seed(job.seed)
        texts, audios = [], []
        for row, prompt in zip(job.rows, [job.prompt, job.uncond][: job.n_rows], strict=True):
            text, audio, is_audio = (
                x[None].to(self.device) for x in (prompt.text, prompt.audio, prompt.is_audio)
            )
            valid = torch.ones_like(is_audio)
            t, a = prefill(
                self.model, text, audio, is_audio, valid, _RowsView(self.pool, row, 1), job.start_audio
            )
            texts.append(t)
            audios.append(a)
        job.pos = [len(job.prompt.text)] + ([len(job.uncond.text)] if job.uncond is not None else [])
        job.logits = (torch.cat(texts), None if audios[0] is None else torch.cat(audios))

    def _choose(self, jobs: list[Job]) -> None:
        """Each job's next step from its logits (guided jobs mixed), as `generate` chooses one row's."""
        text = torch.stack([_guided(j, 0) for j in jobs])  # (J, V)
        eos_ok = torch.tensor([j.steps >= j.min_new for j in jobs], device=self.device)
        in_audio = torch.tensor([j.in_audio for j in jobs], device=self.device)
        logits = text + self.bias[in_audio.long(), eos_ok.long()]  # (J, V)
        tok = logits.argmax(-1).tolist()
        for i, j in enumerate(jobs):
            codes = None
            try:
                if j.sampling.temperature > 0:
                    tok[i] = int(sample(logits[i : i + 1], j.sampling, j.generator)[0])
                if j.in_audio:
                    real = _guided(j, 1) + self.rules.real_code  # (K, C)
                    greedy = j.sampling.temperature == 0
                    drawn = real.argmax(-1) if greedy else sample(real, j.sampling, j.generator)  # (K,)
                    if j.tail:  # inside the pattern's tail: another frame, whatever the text head says
                        tok[i] = self.vocab.audio
                    ending = j.tail or (tok[i] == self.vocab.eos and self.rules.n_tail)
                    active = self.rules.tail[j.tail] if ending else self.rules.active[j.audio_step]
                    codes = torch.where(active, drawn, self.vocab.empty_code)
            except RuntimeError as e:  # e.g. non-finite logits: this job fails, the batch goes on
                self._fail(j, f"sampling failed: {e}")
                continue
            finally:
                j.logits = None
            self._advance(j, tok[i], codes)

    def _advance(self, job: Job, tok: int, codes: torch.Tensor | None) -> None:
        """Record the step `tok` / `codes` and update the job's mode and stop flags."""
        v, n_tail = self.vocab, self.rules.n_tail
        tailing = job.in_audio and n_tail > 0 and (job.tail > 0 or tok == v.eos)  # the first carries <eos>
        frame = job.in_audio and (tok == v.audio or tailing)
        job.steps += 1
        if frame:
            job.audio.append(codes)
            job.audio_step += 1
            job.tail += tailing
            if job.stream:
                self._emit(job, "audio", codes)
        elif tok != v.eos:
            job.text.append(tok)
        job.in_audio = tok == v.audio or (job.in_audio and tok != v.text)
        job.last = (v.pad if frame else tok, frame, codes if frame else self.empty)
        ended = job.tail >= n_tail if tailing else tok == v.eos
        if ended or job.steps >= job.max_new:
            job.finished = True
            elapsed = time.monotonic() - job.submitted
            self.mean_job_seconds += 0.1 * (elapsed - self.mean_job_seconds)
            self._emit(job, "done", job)

    def _decode(self) -> None:
        """One decode step of every running row; each job's logits wait for the next `_choose`."""
        owners = sorted((j.rows[i], n, i) for n, j in enumerate(self.running) for i in range(j.n_rows))
        owners = [(self.running[n], i) for _, n, i in owners]  # pool row r -> (job, which of its rows)
        R = len(owners)
        text = torch.tensor([j.last[0] for j, _ in owners], device=self.device)[:, None]  # (R, 1)
        is_audio = torch.tensor([j.last[1] for j, _ in owners], device=self.device)[:, None]  # (R, 1)
        audio = torch.stack([j.last[2] for j, _ in owners])[:, None] if bool(is_audio.any()) else None
        pos = torch.tensor([j.pos[i] for j, i in owners], device=self.device)  # (R,)
        rotary = rope(pos[:, None], self.model.config, self.dtype)  # (R, 1, 1, hd)
        if R == 1:  # exactly `generate`'s step for one row: keys [0, pos], no mask
            start, mask = int(pos[0]), None
        else:
            start = 0
            mask = torch.arange(int(pos.max()) + 1, device=self.device) <= pos[:, None]  # (R, L)
            mask = mask[:, None, None]  # (R, 1, 1, L)
        heads = any(j.in_audio for j in self.running)
        t, a = decode_step(
            self.model, text, audio, is_audio, rotary, start, mask, _StepView(self.pool, pos), heads
        )
        for job in self.running:
            job.logits = (t[job.rows], None if a is None else a[job.rows])
            job.pos = [p + 1 for p in job.pos]
        self.peak_batch = max(self.peak_batch, len(self.running))
        if self.on_step is not None:
            self.on_step(len(self.running), R)

    def _emit(self, job: Job, kind: str, payload: object) -> None:
        if job.on_event is not None:
            try:
                job.on_event(kind, payload)
            except Exception:  # a listener that went away (closed event loop) must not stop the batch
                job.on_event = None

    def _cancelled(self, job: Job) -> None:
        if self.on_cancel is not None:
            self.on_cancel()
        self._emit(job, "cancelled", None)

    def _fail(self, job: Job, message: str) -> None:
        job.finished = True
        self._emit(job, "error", message)


def _guided(job: Job, which: int) -> torch.Tensor:
    """The job's text (which=0: (V,)) or audio (which=1: (K, C)) logits; guided: uncond + g (cond - uncond)."""
    x = job.logits[which]
    if job.uncond is None:
        return x[0]
    return x[1] + job.guidance * (x[0] - x[1])
