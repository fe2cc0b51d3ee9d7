"""The Python API: load a trained checkpoint and transcribe, speak, make music and sound, continue audio.

lm = AudioLM.from_pretrained("tiny")                   # or a directory exported by training
lm.transcribe("speech.wav")                            # -> str
wav, sr = lm.synthesize("Hello there.", voice_prompt="ref.wav")
wav, sr = lm.generate_music("calm piano, slow", duration=8.0, guidance_scale=3.0)
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from audiollm import audio, patterns, tasks
from audiollm import quantize as quantization
from audiollm import speculative as speculation
from audiollm.codecs import Codec, load_codec
from audiollm.generate import Sampling, generate
from audiollm.model import AudioLanguageModel
from audiollm.tasks import Prompt, Template
from audiollm.text import load_tokenizer

ASSETS = Path(__file__).resolve().parent / "assets"
PRETRAINED = {"tiny": ASSETS / "tiny"}  # name -> directory shipped inside the package
AudioInput = str | Path | tuple[np.ndarray, int]


def as_waveform(item: tuple[np.ndarray, int], what: str = "audio") -> tuple[torch.Tensor, int]:
    """(array, sample_rate) -> float32 (C, N) tensor and the rate, checked: a positive whole rate (Hz) and a
    finite, non-empty array shaped (N,), (C, N), or soundfile's (N, C) (the shorter axis is the channels).
    Raises audio.AudioError naming `what`."""
    if not isinstance(item, tuple) or len(item) != 2:
        raise audio.AudioError(what, "must be a path or an (array, sample_rate) pair")
    data, sr = item
    if isinstance(sr, bool) or not isinstance(sr, int | float | np.number) or not math.isfinite(sr) or sr <= 0 or sr != int(sr):  # fmt: skip
        raise audio.AudioError(what, f"the sample rate must be a positive whole number of Hz, got {sr!r}")
    try:
        wav = np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError):
        raise audio.AudioError(what, f"is not an array of samples (got {type(data).__name__})") from None
    if wav.ndim not in (1, 2):
        raise audio.AudioError(what, f"must be shaped (N,), (C, N) or (N, C), got {wav.shape}")
    if wav.size == 0:
        raise audio.AudioError(what, f"is empty (shape {wav.shape}): no samples")
    if not np.isfinite(wav).all():
        raise audio.AudioError(what, "contains NaN or infinite samples")
    wav = wav[None] if wav.ndim == 1 else wav.T if wav.shape[0] > wav.shape[1] else wav  # (C, N)
    return torch.from_numpy(np.ascontiguousarray(wav)), int(sr)


def _positive_seconds(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:  # fmt: skip
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def _strings(value: str | list[str], name: str) -> list[str]:
    """A str or a non-empty list of str, as a list; anything else is a ValueError naming `name`."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(t, str) for t in items):
        raise ValueError(f"{name} must be a string or a non-empty list of strings, got {value!r:.60}")
    return items


def resolve_device(device: str | None = None, dtype: str | None = None) -> tuple[torch.device, torch.dtype]:
    """CUDA with bf16 when present, else CPU with float32; explicit choices are checked once, loudly."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype is None:
        dtype = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if dtype not in dtypes:
        raise ValueError(f"dtype must be one of {sorted(dtypes)}, got {dtype!r}")
    if dtype == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("bf16 is not supported on this GPU; use dtype='fp16' or 'fp32'")
    return device, dtypes[dtype]


class AudioLM:
    """A trained audiollm checkpoint with its text tokenizer and codec, ready for inference."""

    def __init__(self, model: AudioLanguageModel, tokenizer, codec: Codec, config: dict, name: str = ""):
        self.model, self.tokenizer, self.codec, self.config, self.name = model, tokenizer, codec, config, name
        self.vocab = model.config.vocab
        self.template = config.get("template", {})
        self.pattern = self.template.get("pattern", "delay")
        self.max_len = self.template.get("max_len", 1024)
        self.tasks = config.get("tasks", list(tasks.TASKS))
        self.device = next(model.parameters()).device
        self.decode = generate  # audiollm.generate.generate, or speculative decoding (from_pretrained)

    @classmethod
    def from_pretrained(
        cls,
        name_or_dir: str | Path = "tiny",
        device: str | None = None,
        dtype: str | None = None,
        quantize: str | None = None,
        speculative: bool = False,
    ):
        """Load a shipped model by name (see `PRETRAINED`) or a checkpoint directory; `quantize="int8"`
        stores its Linear weights as int8 with per-output-channel scales (`audiollm.quantize`);
        `speculative=True` decodes speculatively with its own first layers as the draft (`audiollm.speculative`)."""
        if quantize is not None:
            quantization.check_scheme(quantize)
        name = str(name_or_dir)
        directory = PRETRAINED.get(name, Path(name))
        if not (directory / "config.json").is_file():
            if name in PRETRAINED:
                raise FileNotFoundError(
                    f"the shipped model '{name}' is missing from {directory}; reinstall audiollm"
                )
            raise FileNotFoundError(
                f"unknown model '{name}': not one of {', '.join(PRETRAINED)} and not a directory with config.json"
            )
        config = json.loads((directory / "config.json").read_text())
        dev, dt = resolve_device(device, dtype)
        model = AudioLanguageModel.from_pretrained(directory, device=dev).to(dt)
        if quantize is not None:
            quantization.quantize(model, quantize)
        tokenizer = load_tokenizer(directory, config.get("text_tokenizer", "sentencepiece"))
        ref = config["codec"]
        codec_name = directory / ref["codec"] if (directory / str(ref["codec"])).is_dir() else ref["codec"]
        options = {"device": str(dev)} | ({"bandwidth": ref["bandwidth"]} if ref.get("bandwidth") else {})
        lm = cls(model, tokenizer, load_codec(codec_name, **options), config, name)
        lm.set_speculative(speculative)
        return lm

    def set_speculative(self, on: bool = True) -> None:
        """Decode speculatively, the model's first layers drafting (`audiollm.speculative`), or plainly."""
        draft = speculation.early_exit(self.model) if on else None
        self.decode = generate if draft is None else functools.partial(speculation.generate, draft=draft)

    # ---- helpers -------------------------------------------------------------------------------------
    def _require(self, task: str) -> None:
        if task not in self.tasks:
            raise ValueError(
                f"model '{self.name}' was not trained for {task} (its tasks: {', '.join(self.tasks)})"
            )

    def _encode(self, item: AudioInput | torch.Tensor, seconds: float | None = None) -> torch.Tensor:
        """Audio (path, (array, sr) or (C, N) tensor at the codec rate) -> codes (K, T) of the model's K."""
        if isinstance(item, tuple):
            wav, sr = as_waveform(item)
            wav = audio.conform(wav, sr, self.codec.sample_rate, self.codec.channels)
        elif isinstance(item, torch.Tensor):
            wav = item
        else:
            wav, _ = audio.load(item, self.codec.sample_rate, self.codec.channels, duration=seconds)
        return self.codec.encode(wav[None].to(self.device))[0, : self.vocab.num_codebooks].cpu()

    def _decode(self, codes: torch.Tensor) -> tuple[np.ndarray, int]:
        """Codes (K, T) -> mono/stereo float32 numpy (N,) or (C, N), sample rate."""
        if codes.shape[-1] == 0:
            return np.zeros(0, np.float32), self.codec.sample_rate
        wav = self.codec.decode(codes[None].to(self.device))[0].float().cpu().numpy()
        return (wav[0] if wav.shape[0] == 1 else wav), self.codec.sample_rate

    def _text_ids(self, text: str, what: str) -> list[int]:
        if not text or not text.strip():
            raise ValueError(f"{what} is empty")
        ids = self.tokenizer.encode(text)
        limit = self.max_len // 4
        if len(ids) > limit:
            raise ValueError(f"{what} is too long: {len(ids)} tokens, the limit of this model is {limit}")
        return ids

    def _generate_audio(
        self, prompts: list[Prompt], seconds: float, seed: int | None, full_length: bool = False, **kwargs
    ) -> list:
        """Codes (K, T) per prompt, at most `seconds` long; `full_length`: `<eos>` is held back until then."""
        generator = torch.Generator(self.device).manual_seed(seed) if seed is not None else None
        room = self.max_len - max(len(p.text) for p in prompts)
        steps = min(room, patterns.get(self.pattern).num_steps(round(seconds * self.codec.frame_rate),
                                                                     self.vocab.num_codebooks))  # fmt: skip
        if steps < 1:
            raise ValueError(
                f"the prompt leaves no room for audio within the model's {self.max_len} positions"
            )
        out = self.decode(
            self.model, prompts, template=kwargs.pop("template", Template(start="audio")),
            sampling=kwargs.pop("sampling", Sampling(temperature=1.0, top_k=50)), max_new_tokens=steps,
            pattern=self.pattern, generator=generator, min_new_tokens=steps if full_length else 0, **kwargs,
        )  # fmt: skip
        return [out.row_audio(b) for b in range(len(prompts))]

    # ---- tasks ---------------------------------------------------------------------------------------
    def transcribe(
        self,
        inputs: AudioInput | list[AudioInput],
        chunk_seconds: float | None = None,
        batch_size: int = 16,
        skip_errors: bool = False,
    ) -> str | list[str] | list[str | audio.AudioError]:
        """Speech -> text. Accepts a path, (array, sample_rate), or a list of them. Long audio is read and
        encoded one chunk at a time (memory flat in its length). skip_errors: an input that cannot be used
        gives its audio.AudioError in place of its text, and the rest are transcribed."""
        self._require("asr")
        single = not isinstance(inputs, list)
        items = [inputs] if single else inputs
        frame_rate, K = self.codec.frame_rate, self.vocab.num_codebooks
        max_frames = tasks.max_frames(self.max_len // 2, K, self.pattern)
        chunk = max_frames if chunk_seconds is None else round(_positive_seconds(chunk_seconds, "chunk_seconds") * frame_rate)  # fmt: skip
        step = max(1, min(chunk, max_frames))  # code frames per window
        pieces: list[tuple[int, torch.Tensor]] = []  # (input index, codes (K, <= step))
        failed: dict[int, audio.AudioError] = {}
        for i, item in enumerate(items):
            what = "audio" if single else f"inputs[{i}]"
            try:  # a list, so that an input that fails part-way adds nothing
                windows = self._windows(item, step / frame_rate, what)
                pieces += [(i, self._encode(w)[:, :step]) for w in windows]
            except audio.AudioError as e:
                if not skip_errors:
                    raise
                failed[i] = e
        texts: list[list[str]] = [[] for _ in items]
        for start in range(0, len(pieces), batch_size):
            group = pieces[start : start + batch_size]
            prompts = [tasks.asr(self.vocab, self.pattern, c, None).prompt() for _, c in group]
            room = self.max_len - max(len(p.text) for p in prompts)
            out = self.decode(self.model, prompts, template=Template(start="text"), sampling=Sampling(temperature=0),
                           max_new_tokens=max(1, min(room, self.max_len // 4)), pattern=self.pattern)  # fmt: skip
            for b, (i, _) in enumerate(group):
                ids = [t for t in out.row_text(b) if t < self.vocab.text_size]
                texts[i].append(self.tokenizer.decode(ids).strip())
        joined = [failed.get(i) or " ".join(t for t in parts if t) for i, parts in enumerate(texts)]
        return joined[0] if single else joined

    def _windows(self, item: AudioInput, seconds: float, what: str) -> Iterator[torch.Tensor]:
        """Consecutive windows of `seconds` of a path or (array, sr), each (C, n) at the codec's rate and
        channels; a file is read one window at a time."""
        rate, channels = self.codec.sample_rate, self.codec.channels
        if isinstance(item, tuple):
            wav, sr = as_waveform(item, what)  # (C, N)
            n = max(1, round(seconds * sr))
            for first in range(0, wav.shape[-1], n):
                yield audio.conform(wav[:, first : first + n], sr, rate, channels)
            return
        meta = audio.info(item)
        if meta.frames == 0:
            raise audio.AudioError(item, "contains no audio samples (zero length)")
        n = max(1, round(seconds * meta.samplerate))
        for first in range(0, meta.frames, n):
            start, length = first / meta.samplerate, n / meta.samplerate
            yield audio.load(item, rate, channels, start=start, duration=length)[0]

    def synthesize(
        self,
        text: str | list[str],
        voice_prompt: AudioInput | list[AudioInput | None] | None = None,
        max_seconds: float = 10.0,
        seed: int | None = None,
    ) -> tuple[np.ndarray, int] | list[tuple[np.ndarray, int]]:
        """Text -> speech (float32 numpy, sample rate), in the voice of `voice_prompt` when given.
        A list of texts (with one voice prompt for all, or a list of one each) is generated as one batch
        and gives a list of results."""
        self._require("tts")
        texts = _strings(text, "text")
        _positive_seconds(max_seconds, "max_seconds")
        voices = voice_prompt if isinstance(voice_prompt, list) else [voice_prompt] * len(texts)
        seconds = self.template.get("prompt_seconds", 3.0)
        prompts = [
            tasks.tts(self.vocab, self.pattern, self._text_ids(t, "text"), None,
                      None if v is None else self._encode(v, seconds=seconds)).prompt()
            for t, v in zip(texts, voices, strict=True)
        ]  # fmt: skip
        results = [self._decode(codes) for codes in self._generate_audio(prompts, max_seconds, seed)]
        return results[0] if isinstance(text, str) else results

    def _captioned(
        self, task: str, caption: str | list[str], duration: float, guidance_scale: float, seed: int | None
    ):
        self._require(task)
        captions = _strings(caption, "caption")
        _positive_seconds(duration, "duration")
        cond = [tasks.captioned(self.vocab, self.pattern, task, self._text_ids(c, "caption"), None).prompt()
                for c in captions]  # fmt: skip
        uncond = [tasks.captioned(self.vocab, self.pattern, task, [], None).prompt()] * len(cond)
        batch = self._generate_audio(  # music and sounds last as long as asked, as MusicGen's do
            cond, duration, seed, full_length=True, uncond=uncond, guidance_scale=guidance_scale
        )
        results = [self._decode(codes) for codes in batch]
        return results[0] if isinstance(caption, str) else results

    def generate_music(
        self,
        caption: str | list[str],
        duration: float = 8.0,
        guidance_scale: float = 3.0,
        seed: int | None = None,
    ):
        """Caption -> music (float32 numpy, sample rate), with classifier-free guidance; a list of captions
        is generated as one batch and gives a list of results."""
        return self._captioned("music", caption, duration, guidance_scale, seed)

    def generate_sfx(
        self,
        caption: str | list[str],
        duration: float = 4.0,
        guidance_scale: float = 3.0,
        seed: int | None = None,
    ):
        """Caption -> sound effect (float32 numpy, sample rate), with classifier-free guidance; a list of
        captions is generated as one batch and gives a list of results."""
        return self._captioned("sfx", caption, duration, guidance_scale, seed)

    def continue_audio(self, clip: AudioInput, duration: float = 4.0, seed: int | None = None):
        """Audio -> the clip followed by `duration` seconds of continuation (float32 numpy, sample rate)."""
        self._require("continue")
        _positive_seconds(duration, "duration")
        prefix = self._encode(clip)
        prompt, template = tasks.continuation_prompt(self.vocab, self.pattern, prefix)
        generator = torch.Generator(self.device).manual_seed(seed) if seed is not None else None
        new = round(duration * self.codec.frame_rate)
        room = self.max_len - len(prompt.text)
        steps = max(1, min(room, new + self.vocab.num_codebooks))  # the duration asked: <eos> held back
        out = self.decode(self.model, [prompt], template=template, sampling=Sampling(temperature=1.0, top_k=50),
                       max_new_tokens=steps, min_new_tokens=steps, pattern=self.pattern,
                       generator=generator)  # fmt: skip
        n = int(out.lengths[0])
        steps = torch.cat([prompt.audio[prompt.is_audio], out.audio[0, :n][out.is_audio[0, :n]]])  # (S, K)
        codes = patterns.revert(steps.T[None], self.pattern)[0]
        return self._decode(codes[:, : prefix.shape[-1] + new])
