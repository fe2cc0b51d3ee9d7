"""The Python API: load a trained checkpoint and transcribe, speak, make music and sound, continue audio.

lm = AudioLM.from_pretrained("tiny")                   # or a directory exported by training
lm.transcribe("speech.wav")                            # -> str
wav, sr = lm.synthesize("Hello there.", voice_prompt="ref.wav")
wav, sr = lm.generate_music("calm piano, slow", duration=8.0, guidance_scale=3.0)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from audiollm import audio, tasks
from audiollm import quantize as quantization
from audiollm import speculative as speculation
from audiollm.checkpoint import Checkpoint, CheckpointError
from audiollm.codecs import Codec, load_codec
from audiollm.generate import Generation, Sampling, generate
from audiollm.model import CONFIG_FILE, AudioLanguageModel
from audiollm.tasks import Prompt, Template

ASSETS = Path(__file__).resolve().parent / "assets"
PRETRAINED = {"tiny": ASSETS / "tiny"}  # name -> directory shipped inside the package
AudioInput = str | Path | tuple[np.ndarray, int]
AudioResult = (
    tuple[np.ndarray, int] | list[tuple[np.ndarray, int]]
)  # float32 audio, sample rate (one per input)


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

    def __init__(
        self,
        model: AudioLanguageModel,
        tokenizer,
        codec: Codec,
        config: Checkpoint | dict,
        name: str = "",
        directory: str | Path | None = None,
    ):
        """`config`: the checkpoint's `Checkpoint`, or its config.json dict (checked the same way);
        `directory`: the checkpoint directory it was loaded from (None: built in memory)."""
        self.model, self.tokenizer, self.codec, self.name = model, tokenizer, codec, name
        self.checkpoint = config if isinstance(config, Checkpoint) else Checkpoint.from_dict(config, "config")
        self.directory = None if directory is None else Path(directory)
        self.config = self.checkpoint.to_dict()  # the config.json dict
        self.vocab = model.config.vocab
        self.template = self.config["template"]  # TemplateOptions as a dict
        self.pattern, self.max_len = self.checkpoint.template.pattern, self.checkpoint.template.max_len
        self.tasks = list(self.checkpoint.tasks)
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
    ) -> AudioLM:
        """Load a shipped model by name (see `PRETRAINED`) or a checkpoint directory; `quantize="int8"`
        stores its Linear weights as int8 with per-output-channel scales (`audiollm.quantize`);
        `speculative=True` decodes speculatively with its own first layers as the draft (`audiollm.speculative`)."""
        if quantize is not None:
            quantization.check_scheme(quantize)
        name = str(name_or_dir)
        directory = PRETRAINED.get(name, Path(name))
        if not (directory / CONFIG_FILE).is_file():
            if name in PRETRAINED:
                raise FileNotFoundError(
                    f"the shipped model '{name}' is missing from {directory}; reinstall audiollm"
                )
            raise FileNotFoundError(
                f"unknown model '{name}': not one of {', '.join(PRETRAINED)} and not a directory with config.json"
            )
        checkpoint = Checkpoint.load(directory)
        if checkpoint.codec is None:
            raise CheckpointError(
                f"{directory / CONFIG_FILE}: field 'codec' is null: a trunk without a codec (as converted) "
                "cannot run; fine-tune it on tokenised audio (`audiollm fit`) first"
            )
        dev, dt = resolve_device(device, dtype)
        model = checkpoint.load_model(directory, device=dev).to(dt)
        if quantize is not None:
            quantization.quantize(model, quantize)
        ref = checkpoint.codec
        options = {"device": str(dev)} | ({"bandwidth": ref.bandwidth} if ref.bandwidth else {})
        codec = load_codec(ref.source(directory), **options)
        lm = cls(model, checkpoint.load_tokenizer(directory), codec, checkpoint, name, directory)
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

    def _prompt(
        self, task: str, ids: list[int] | None = None, codes: torch.Tensor | None = None,
        voice: torch.Tensor | None = None,
    ) -> tuple[Prompt, Template]:  # fmt: skip
        """The task table's inference prompt for this model's vocabulary and pattern."""
        return tasks.get(task).prompt(self.vocab, self.pattern, ids or [], codes, voice)

    def _generate_audio(
        self, prompts: list[Prompt], template: Template, seconds: float, seed: int | None,
        full_length: bool = False, prefix_frames: int = 0, **guidance,
    ) -> Generation:  # fmt: skip
        """Generate `seconds` of new audio at most per prompt, after `prefix_frames` frames of the prompt's
        own (a continuation); `full_length`: `<eos>` is held back until then. `guidance`: uncond and
        guidance_scale for classifier-free guidance."""
        generator = torch.Generator(self.device).manual_seed(seed) if seed is not None else None
        room = self.max_len - max(len(p.text) for p in prompts)
        frames = round(seconds * self.codec.frame_rate)
        steps = min(room, tasks.audio_steps(self.pattern, self.vocab.num_codebooks, frames, prefix_frames))
        if steps < 1:
            raise ValueError(
                f"the prompt leaves no room for audio within the model's {self.max_len} positions"
            )
        return self.decode(
            self.model, prompts, template=template, sampling=Sampling(temperature=1.0, top_k=50),
            max_new_tokens=steps, pattern=self.pattern, generator=generator,
            min_new_tokens=steps if full_length else 0, **guidance,
        )  # fmt: skip

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
            prompts = [self._prompt("asr", codes=c) for _, c in group]
            room = self.max_len - max(len(p.text) for p, _ in prompts)
            out = self.decode(self.model, [p for p, _ in prompts], template=prompts[0][1], sampling=Sampling(temperature=0),
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
    ) -> AudioResult:
        """Text -> speech (float32 numpy, sample rate), in the voice of `voice_prompt` when given.
        A list of texts (with one voice prompt for all, or a list of one each) is generated as one batch
        and gives a list of results."""
        self._require("tts")
        texts = _strings(text, "text")
        _positive_seconds(max_seconds, "max_seconds")
        voices = voice_prompt if isinstance(voice_prompt, list) else [voice_prompt] * len(texts)
        seconds = self.checkpoint.template.prompt_seconds
        prompts = [
            self._prompt("tts", self._text_ids(t, "text"), voice=None if v is None else self._encode(v, seconds=seconds))
            for t, v in zip(texts, voices, strict=True)
        ]  # fmt: skip
        out = self._generate_audio([p for p, _ in prompts], prompts[0][1], max_seconds, seed)
        results = [self._decode(out.row_audio(b)) for b in range(len(prompts))]
        return results[0] if isinstance(text, str) else results

    def generate_captioned(
        self, task: str, caption: str | list[str], duration: float = 4.0, guidance_scale: float = 3.0,
        seed: int | None = None,
    ) -> AudioResult:  # fmt: skip
        """Caption -> audio for a captioned task of the table (music, sfx), with classifier-free guidance;
        a list of captions is generated as one batch and gives a list of results."""
        if not tasks.get(task).captioned:
            raise ValueError(f"{task} is not a captioned task (those are music and sfx)")
        self._require(task)
        captions = _strings(caption, "caption")
        _positive_seconds(duration, "duration")
        cond = [self._prompt(task, self._text_ids(c, "caption"))[0] for c in captions]
        uncond, template = self._prompt(task)  # the empty caption
        out = self._generate_audio(  # music and sounds last as long as asked, as MusicGen's do
            cond,
            template,
            duration,
            seed,
            full_length=True,
            uncond=[uncond] * len(cond),
            guidance_scale=guidance_scale,
        )
        results = [self._decode(out.row_audio(b)) for b in range(len(cond))]
        return results[0] if isinstance(caption, str) else results

    def generate_music(
        self,
        caption: str | list[str],
        duration: float = 8.0,
        guidance_scale: float = 3.0,
        seed: int | None = None,
    ) -> AudioResult:
        """Caption -> music (float32 numpy, sample rate), with classifier-free guidance; a list of captions
        is generated as one batch and gives a list of results."""
        return self.generate_captioned("music", caption, duration, guidance_scale, seed)

    def generate_sfx(
        self,
        caption: str | list[str],
        duration: float = 4.0,
        guidance_scale: float = 3.0,
        seed: int | None = None,
    ) -> AudioResult:
        """Caption -> sound effect (float32 numpy, sample rate), with classifier-free guidance; a list of
        captions is generated as one batch and gives a list of results."""
        return self.generate_captioned("sfx", caption, duration, guidance_scale, seed)

    def continue_audio(
        self, clip: AudioInput, duration: float = 4.0, seed: int | None = None
    ) -> tuple[np.ndarray, int]:
        """Audio -> the clip followed by `duration` seconds of continuation (float32 numpy, sample rate)."""
        self._require("continue")
        _positive_seconds(duration, "duration")
        prefix = self._encode(clip)  # (K, T0)
        prompt, template = self._prompt("continue", codes=prefix)
        out = self._generate_audio(
            [prompt], template, duration, seed, full_length=True, prefix_frames=prefix.shape[-1]
        )
        codes = out.row_audio(0, before=prompt.audio[prompt.is_audio])  # the prefix's steps, then the new
        return self._decode(codes[:, : prefix.shape[-1] + round(duration * self.codec.frame_rate)])
