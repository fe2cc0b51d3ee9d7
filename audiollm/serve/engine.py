"""What the server does for each endpoint, without HTTP: requests become scheduler jobs, results become
text or audio. The event loop of the server awaits jobs here; the scheduler thread runs the model and a
pool of `codec_workers` threads reads and encodes uploads and decodes audio, several requests at once, so
neither blocks the loop. The codecs' encode and decode only read their modules (in eval mode; the hook of a
weight-normalised convolution rewrites its `weight` from the same parameters to the same values), so
concurrent calls give what calls one at a time do.

Streaming: audio steps arrive as the scheduler writes them; every few complete frames the codec decodes
a window (`StreamDecoder`: some frames of left context, a small lookahead held back), so the first sound
leaves after the first frames, not after the whole clip.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from audiollm import audio, patterns, tasks
from audiollm.api import AudioLM
from audiollm.generate import Sampling
from audiollm.serve.config import ServeConfig
from audiollm.serve.formats import read_upload
from audiollm.serve.scheduler import Job, QueueFull, Scheduler

Disconnected = Callable[[], Awaitable[bool]]

T = TypeVar("T")


class ServeError(Exception):
    """A request that fails with HTTP `status`; `message` says why (and names the parameter)."""

    def __init__(self, status: int, message: str, param: str | None = None, headers: dict | None = None):
        self.status, self.message, self.param, self.headers = status, message, param, headers or {}
        super().__init__(message)


class StreamDecoder:
    """Complete frames -> audio, a window at a time: decode frames [emitted - context, T) and send the
    samples of [emitted, T - lookahead); the first window is `first` frames, later ones `chunk`."""

    def __init__(self, lm: AudioLM, first: int = 4, chunk: int = 20, context: int = 20, lookahead: int = 4):
        self.lm, self.first, self.chunk, self.context, self.lookahead = lm, first, chunk, context, lookahead
        self.hop = round(lm.codec.sample_rate / lm.codec.frame_rate)  # samples per frame
        self.emitted = 0  # frames sent

    def ready(self, steps: int) -> bool:
        """Whether `steps` audio steps hold a window to send."""
        frames = patterns.get(self.lm.pattern).num_frames(steps, self.lm.vocab.num_codebooks)
        return frames - self.lookahead - self.emitted >= (self.first if self.emitted == 0 else self.chunk)

    def take(self, steps: torch.Tensor, final: bool = False) -> np.ndarray:
        """steps (S, K) -> float32 (C, n) samples not sent yet (all of them when final)."""
        codes = patterns.revert(steps.T[None], self.lm.pattern)[0] if len(steps) else None  # (K, T)
        T = 0 if codes is None else codes.shape[-1]
        end = T if final else T - self.lookahead
        if end <= self.emitted:
            return np.zeros((self.lm.codec.channels, 0), np.float32)
        lo = max(0, self.emitted - self.context)
        wav = decode(self.lm, codes[:, lo:T])  # (C, (T - lo) * hop)
        a = (self.emitted - lo) * self.hop
        out = wav[:, a:] if final else wav[:, a : (end - lo) * self.hop]
        self.emitted = end
        return out


def decode(lm: AudioLM, codes: torch.Tensor) -> np.ndarray:
    """codes (K, T) -> float32 (C, N)."""
    if codes.shape[-1] == 0:
        return np.zeros((lm.codec.channels, 0), np.float32)
    with torch.inference_mode():
        return lm.codec.decode(codes[None].to(lm.device))[0].float().cpu().numpy()


class _Waiter:
    """A job's events, handed from the scheduler thread to the event loop."""

    def __init__(self, job: Job, loop: asyncio.AbstractEventLoop):
        self.queue: asyncio.Queue = asyncio.Queue()
        job.on_event = lambda kind, payload: loop.call_soon_threadsafe(self.queue.put_nowait, (kind, payload))


class Engine:
    """An `AudioLM` behind a continuous-batching `Scheduler`, with the server's bounds."""

    def __init__(
        self, lm: AudioLM, config: ServeConfig, model_id: str | None = None, on_step=None, on_cancel=None
    ):
        self.lm, self.config = lm, config
        self.model_id = model_id or Path(config.model).name
        self.scheduler = Scheduler(
            lm.model, lm.pattern, lm.max_len, config.max_batch, config.max_queue, config.prefill_budget,
            on_step=on_step, on_cancel=on_cancel,
        )  # fmt: skip
        self.codec_pool = ThreadPoolExecutor(config.codec_workers, thread_name_prefix="audiollm-codec")
        seconds = lm.checkpoint.template.prompt_seconds
        self.voices: dict[str, torch.Tensor | None] = {"default": None}
        for name, path in config.voices().items():
            wav, _ = audio.load(path, lm.codec.sample_rate, lm.codec.channels, duration=seconds)
            self.voices[name] = self._encode(wav)

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.stop()
        self.codec_pool.shutdown(wait=False, cancel_futures=True)

    # ---- requests -> jobs ----------------------------------------------------------------------------
    def check_model(self, model: str | None) -> None:
        if model != self.model_id:
            raise ServeError(404, f"model {model!r} not found; this server serves {self.model_id!r}", "model")

    def _require(self, task: str) -> None:
        if task not in self.lm.tasks:
            raise ServeError(
                400,
                f"model {self.model_id!r} was not trained for {task} (its tasks: {', '.join(self.lm.tasks)})",
            )

    def _text_ids(self, text: str, param: str) -> list[int]:
        if not text or not text.strip():
            raise ServeError(400, f"{param} is empty", param)
        ids, limit = self.lm.tokenizer.encode(text), self.lm.max_len // 4
        if len(ids) > limit:
            raise ServeError(
                400, f"{param} is too long: {len(ids)} tokens; the limit of this model is {limit}", param
            )
        return ids

    def _steps(self, prompt_len: int, seconds: float, param: str) -> int:
        if not 0 < seconds <= self.config.max_audio_seconds:
            raise ServeError(400, f"{param} must be in (0, {self.config.max_audio_seconds:g}] seconds", param)
        frames = max(1, round(seconds * self.lm.codec.frame_rate))
        steps = min(
            self.lm.max_len - prompt_len,
            tasks.audio_steps(self.lm.pattern, self.lm.vocab.num_codebooks, frames),
        )
        if steps < 1:
            raise ServeError(
                400, f"the prompt leaves no room for audio in the model's {self.lm.max_len} positions"
            )
        return steps

    def asr_jobs(self, wav: torch.Tensor, temperature: float = 0.0) -> list[Job]:
        """(C, N) audio at the codec rate -> one job per piece that fits the model's context."""
        self._require("asr")
        codes = self._encode(wav)  # (K, T)
        v, pattern, max_len = self.lm.vocab, self.lm.pattern, self.lm.max_len
        step = max(1, tasks.max_frames(max_len // 2, v.num_codebooks, pattern))
        jobs = []
        for s in range(0, max(codes.shape[-1], 1), step):
            prompt, _ = tasks.get("asr").prompt(v, pattern, [], codes[:, s : s + step])
            new = max(1, min(max_len - len(prompt.text), max_len // 4))
            jobs.append(
                Job(prompt, start_audio=False, max_new=new, sampling=Sampling(temperature=temperature))
            )
        return jobs

    def speech_job(self, text: str, voice: str, seconds: float, sampling: Sampling, seed: int | None) -> Job:
        self._require("tts")
        if voice not in self.voices:
            raise ServeError(
                404, f"voice {voice!r} not found; this server has {', '.join(self.voices)}", "voice"
            )
        ids = self._text_ids(text, "input")
        prompt, _ = tasks.get("tts").prompt(self.lm.vocab, self.lm.pattern, ids, voice=self.voices[voice])
        steps = self._steps(len(prompt.text), seconds, "max_seconds")
        return Job(prompt, start_audio=True, max_new=steps, sampling=sampling, seed=seed)

    def captioned_job(
        self, task: str, caption: str, duration: float, guidance: float, sampling: Sampling, seed: int | None
    ) -> Job:
        """Music or sfx of exactly `duration` seconds (capped by the context), with guidance."""
        self._require(task)
        v, pattern = self.lm.vocab, self.lm.pattern
        cond, _ = tasks.get(task).prompt(v, pattern, self._text_ids(caption, "input"))
        uncond, _ = tasks.get(task).prompt(v, pattern, [])  # the empty caption
        steps = self._steps(len(cond.text), duration, "duration")
        return Job(cond, start_audio=True, max_new=steps, min_new=steps, sampling=sampling, seed=seed,
                   uncond=uncond, guidance=guidance)  # fmt: skip

    # ---- running ---------------------------------------------------------------------------------------
    def _encode(self, wav: torch.Tensor) -> torch.Tensor:
        """(C, N) at the codec rate -> codes (K, T) of the model's K."""
        with torch.inference_mode():
            return self.lm.codec.encode(wav[None].to(self.lm.device))[0, : self.lm.vocab.num_codebooks].cpu()

    async def in_codec_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(*args) on a free codec worker (queued until one is free)."""
        return await asyncio.get_running_loop().run_in_executor(self.codec_pool, fn, *args)

    async def read_upload(self, data: bytes, name: str) -> torch.Tensor:
        c = self.lm.codec
        return await self.in_codec_thread(
            read_upload, data, name, c.sample_rate, c.channels, self.config.max_audio_seconds
        )

    def _submit(self, jobs: list[Job], stream: bool = False) -> list[_Waiter]:
        loop = asyncio.get_running_loop()
        waiters, deadline = [], time.monotonic() + self.config.timeout
        for job in jobs:
            job.stream, job.deadline = stream, deadline  # the scheduler drops a job past its deadline
            waiters.append(_Waiter(job, loop))
        try:
            self.scheduler.submit(jobs)
        except QueueFull as e:
            raise ServeError(429, str(e), headers={"Retry-After": str(e.retry_after)}) from None
        return waiters

    async def _next(self, waiter: _Waiter, deadline: float, disconnected: Disconnected | None):
        """The job's next event; polls for a gone client; raises ServeError on timeout or disconnect."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServeError(
                    504, f"the request took longer than the server's {self.config.timeout:g} s timeout"
                )
            try:
                return await asyncio.wait_for(waiter.queue.get(), timeout=min(left, 0.25))
            except TimeoutError:
                if disconnected is not None and await disconnected():
                    raise ServeError(499, "the client closed the connection") from None

    async def run(self, jobs: list[Job], disconnected: Disconnected | None = None) -> list[Job]:
        """Submit jobs and wait until all are done (cancelled on timeout, error or a gone client)."""
        waiters = self._submit(jobs)
        try:
            for job, waiter in zip(jobs, waiters, strict=True):
                while True:
                    kind, payload = await self._next(waiter, job.deadline, disconnected)
                    if kind == "error":
                        raise ServeError(500, str(payload))
                    if kind == "done":
                        break
                    if kind == "cancelled":  # past its deadline in the scheduler
                        raise ServeError(
                            504,
                            f"the request took longer than the server's {self.config.timeout:g} s timeout",
                        )
            return jobs
        finally:
            for job in jobs:
                job.cancel()  # a no-op for finished jobs

    async def transcribe(
        self, data: bytes, name: str, temperature: float, disconnected: Disconnected | None
    ) -> str:
        wav = await self.read_upload(data, name)
        jobs = await self.in_codec_thread(self.asr_jobs, wav, temperature)
        await self.run(jobs, disconnected)
        texts = []
        for job in jobs:
            ids = [t for t in job.text if t < self.lm.vocab.text_size]
            texts.append(self.lm.tokenizer.decode(ids).strip())
        return " ".join(t for t in texts if t)

    async def generate_audio(self, job: Job, disconnected: Disconnected | None) -> np.ndarray:
        """The whole clip, float32 (C, N)."""
        await self.run([job], disconnected)
        steps = job.audio_steps()
        codes = patterns.revert(steps.T[None], self.lm.pattern)[0] if len(steps) else torch.empty(0, 0)
        return await self.in_codec_thread(decode, self.lm, codes)

    def stream_audio(self, job: Job) -> AsyncIterator[np.ndarray]:
        """Submit job now (a full queue raises here) and return float32 (C, n) pieces of its clip as they
        are decoded; closing the iterator cancels the job."""
        (waiter,) = self._submit([job], stream=True)
        return self._pieces(job, waiter)

    async def _pieces(self, job: Job, waiter: _Waiter) -> AsyncIterator[np.ndarray]:
        decoder, steps, done = StreamDecoder(self.lm), [], False
        try:
            while not done:
                kind, payload = await self._next(waiter, job.deadline, None)
                while True:  # drain what arrived meanwhile
                    if kind == "audio":
                        steps.append(payload)
                    elif kind == "error":
                        raise ServeError(500, str(payload))
                    elif kind in ("done", "cancelled"):
                        done = True
                    if waiter.queue.empty():
                        break
                    kind, payload = waiter.queue.get_nowait()
                if steps and (done or decoder.ready(len(steps))):
                    piece = await self.in_codec_thread(decoder.take, torch.stack(steps), done)
                    if piece.shape[-1]:
                        yield piece
        finally:
            job.cancel()
