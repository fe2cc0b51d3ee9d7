"""The checkpoint format: the directory that training exports and `AudioLM.from_pretrained` loads.

    config.json         {"model": ModelConfig, "codec": CodecRef or null, "text_tokenizer": kind,
                         "template": TemplateOptions, "tasks": [name, ...]}
    model.safetensors   the weights (`AudioLanguageModel.weights()`; float32, or float16 as shipped)
    tokenizer files     tokenizer.model (SentencePiece) or tokenizer.json (Hugging Face)
    codec/              the codec's own directory, where `codec.codec` names one (else a codec name)

`Checkpoint` is config.json, typed. `Checkpoint.load` checks every field, and its errors name the file and
the field. A field that files written before it existed lack takes the default of its `Checkpoint`,
`CodecRef` or `TemplateOptions` field here; nothing else supplies defaults.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from audiollm.model import CONFIG_FILE, WEIGHTS_FILE, AudioLanguageModel, ModelConfig, save_directory
from audiollm.tasks import TASKS, TemplateOptions
from audiollm.text import TOKENIZERS, HFTokenizer, SentencePieceTokenizer, load_tokenizer, tokenizer_kind


class CheckpointError(ValueError):
    """A checkpoint's config.json does not hold a valid checkpoint; the message names the file and field."""


@dataclass(frozen=True)
class CodecRef:
    """The codec whose codes the model reads and writes, as the tokenised data's codec.json describes it."""

    codec: str  # a name for `audiollm.codecs.load_codec`, or a directory relative to the checkpoint
    bandwidth: float | None = None  # EnCodec's kbps (None: the codec has no such setting)
    sample_rate: int | None = None  # Hz
    channels: int | None = None
    frame_rate: float | None = None  # code frames per second
    num_codebooks: int | None = None  # K of the codec (the model may read fewer)
    codebook_size: int | None = None
    weights: str | None = None  # digest of the codec's weights that made the training codes
    format: int | None = None  # version of the tokenised folder the training codes came from

    @classmethod
    def from_dict(cls, raw: Any, where: str | Path) -> CodecRef:
        """Check a codec description (`where` names its file in errors)."""
        return _record(cls, raw, where, "codec")

    def source(self, directory: str | Path) -> str | Path:
        """What to load: the codec directory inside checkpoint `directory` where there is one, else the name."""
        inside = Path(directory) / self.codec
        return inside if inside.is_dir() else self.codec


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint's config.json. The defaults are what a file written before the field existed means."""

    model: ModelConfig  # the transformer and its vocabulary
    codec: CodecRef | None = None  # None: a trunk without a codec yet (as `audiollm convert` writes it)
    text_tokenizer: str = "sentencepiece"  # a kind of `audiollm.text.TOKENIZERS`
    template: TemplateOptions = field(default_factory=TemplateOptions)  # max_len, pattern, ...
    tasks: tuple[str, ...] = TASKS  # the tasks it was trained for (files without the field: all of them)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of config.json."""
        return {
            "model": self.model.to_dict(),
            "codec": None if self.codec is None else asdict(self.codec),
            "text_tokenizer": self.text_tokenizer,
            "template": asdict(self.template),
            "tasks": list(self.tasks),
        }

    @classmethod
    def from_dict(cls, raw: Any, where: str | Path = CONFIG_FILE) -> Checkpoint:
        """Check a config.json object field by field; `where` (the file) is named in every error."""
        parsers: dict[str, Callable[[Any, str | Path], Any]] = {
            "model": _model_config,
            "codec": lambda value, where: None if value is None else CodecRef.from_dict(value, where),
            "text_tokenizer": _tokenizer_kind,
            "template": lambda value, where: _record(TemplateOptions, value, where, "template"),
            "tasks": _tasks,
        }
        return _record(cls, raw, where, "", parsers)

    @classmethod
    def load(cls, directory: str | Path) -> Checkpoint:
        """Read and check `directory`/config.json."""
        file = Path(directory) / CONFIG_FILE
        if not file.is_file():
            raise FileNotFoundError(
                f"{file}: missing; a checkpoint directory holds {CONFIG_FILE} and {WEIGHTS_FILE}"
            )
        try:
            raw = json.loads(file.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{file}: not valid JSON ({e.msg}, line {e.lineno})") from None
        return cls.from_dict(raw, file)

    def save(
        self,
        directory: str | Path,
        model: AudioLanguageModel,
        tokenizer: SentencePieceTokenizer | HFTokenizer | None = None,
    ) -> Path:
        """Write the tokenizer's files, model.safetensors, then config.json (each renamed into place, so a
        config.json stands for a whole checkpoint) to `directory`; returns it."""
        directory = Path(directory)
        if model.config != self.model:
            raise ValueError(f"{directory}: the model's config differs from the checkpoint's 'model'")
        self.from_dict(self.to_dict(), directory / CONFIG_FILE)  # never write what `load` refuses
        if tokenizer is not None:
            kind = tokenizer_kind(tokenizer)
            if kind != self.text_tokenizer:
                raise ValueError(
                    f"{directory}: a {kind} tokenizer, but 'text_tokenizer' is {self.text_tokenizer!r}"
                )
            directory.mkdir(parents=True, exist_ok=True)
            tokenizer.save_pretrained(directory)
        return save_directory(directory, model.weights(), self.to_dict())

    def load_model(self, directory: str | Path, device: str | torch.device = "cpu") -> AudioLanguageModel:
        """The model in checkpoint `directory` (the one this config.json is from): float32, eval mode."""
        weights = Path(directory) / WEIGHTS_FILE
        if not weights.is_file():
            raise FileNotFoundError(f"{weights}: missing; the checkpoint has {CONFIG_FILE} but no weights")
        return AudioLanguageModel.from_weights(self.model, weights, device)

    def load_tokenizer(self, directory: str | Path) -> SentencePieceTokenizer | HFTokenizer:
        """The text tokenizer saved in checkpoint `directory`."""
        return load_tokenizer(directory, self.text_tokenizer)


def _record(cls: type, raw: Any, where: str | Path, name: str, parsers: dict[str, Callable] | None = None):
    """An instance of dataclass `cls` from the JSON object `raw` (the field `name` of `where`; "" for the
    whole file). Unknown keys, missing required fields and values of the wrong type are CheckpointErrors;
    absent fields take `cls`'s defaults. `parsers` check the fields that are not plain JSON values."""
    if not isinstance(raw, dict):
        what = f"field '{name}'" if name else "the file"
        raise CheckpointError(f"{where}: {what} must be a JSON object, got {_shown(raw)}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise CheckpointError(
            f"{where}: unknown field '{_join(name, unknown[0])}'; known: {', '.join(known)}"
        )
    for key, f in known.items():
        if key not in raw and f.default is MISSING and f.default_factory is MISSING:
            raise CheckpointError(f"{where}: field '{_join(name, key)}' is missing")
    hints = typing.get_type_hints(cls)
    parsers = parsers or {}
    return cls(**{
        key: parsers[key](value, where) if key in parsers else _value(value, hints[key], where, _join(name, key))
        for key, value in raw.items()
    })  # fmt: skip


def _value(value: Any, hint: Any, where: str | Path, name: str) -> Any:
    """A JSON value of type `hint` (str, int, float, bool, or one of them | None); an int is a valid float."""
    allowed = typing.get_args(hint) or (hint,)  # int | None -> (int, NoneType)
    if float in allowed and type(value) is int:
        value = float(value)
    if type(value) not in allowed:
        names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
        raise CheckpointError(f"{where}: field '{name}' must be {names}, got {_shown(value)}")
    return value


def _model_config(value: Any, where: str | Path) -> ModelConfig:
    if not isinstance(value, dict):
        raise CheckpointError(f"{where}: field 'model' must be a JSON object, got {_shown(value)}")
    if "vocab" not in value:  # ModelConfig's default vocabulary is for tests, never a checkpoint's
        raise CheckpointError(f"{where}: field 'model.vocab' is missing")
    try:
        return ModelConfig.from_dict(value)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: field 'model': {e}") from None


def _tokenizer_kind(value: Any, where: str | Path) -> str:
    if not isinstance(value, str) or value not in TOKENIZERS:
        kinds = ", ".join(TOKENIZERS)
        raise CheckpointError(f"{where}: field 'text_tokenizer' must be one of {kinds}, got {_shown(value)}")
    return value


def _tasks(value: Any, where: str | Path) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise CheckpointError(f"{where}: field 'tasks' must be a list of task names, got {_shown(value)}")
    unknown = [t for t in value if t not in TASKS]
    if unknown:
        raise CheckpointError(
            f"{where}: field 'tasks' names unknown task(s) {unknown}; known: {', '.join(TASKS)}"
        )
    return tuple(value)


def _join(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def _shown(value: Any) -> str:
    """A JSON value for an error message, cut to one short line."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."
