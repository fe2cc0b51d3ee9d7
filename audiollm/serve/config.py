"""What one `audiollm serve` replica runs with: the model, where it listens, and every bound it keeps.

Light on purpose (no torch, no fastapi): the CLI builds its parser from `ServeConfig` at startup.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass, field, fields

from audiollm.threads import cores


def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


CODEC_WORKERS = max(1, min(4, cores() - 1))
"""Default codec workers: one core is left to the scheduler thread that runs the LM. At most 4: encoding
16 short uploads took 0.4-0.6 s on one worker against 0.13 s for the LM to transcribe them batched, so
about 4 workers bring the codec down to the LM's time; more only split the cores further."""


@dataclass
class ServeConfig:
    """One server replica. Each field is a `--flag` of `audiollm serve` (underscores become dashes)."""

    model: str = _opt("tiny", "shipped model name or a trained checkpoint directory")
    host: str = _opt("127.0.0.1", "address to bind (0.0.0.0 serves the network)")
    port: int = _opt(8000, "port to listen on")
    max_batch: int = _opt(16, "most requests decoded together (continuous batching; 1: one at a time)")
    max_queue: int = _opt(64, "most requests waiting for a batch slot; beyond it: 429 with Retry-After")
    api_key: str | None = _opt(None, "require 'Authorization: Bearer KEY' on /v1 endpoints")
    voice: list[str] = field(
        default_factory=list,
        metadata={"help": "a named voice prompt NAME=PATH for /v1/audio/speech (repeatable)"},
    )
    max_upload_mb: float = _opt(25.0, "largest request body in MiB (413 beyond)")
    max_audio_seconds: float = _opt(
        30.0, "longest audio in seconds: uploads (413 beyond) and generated clips (400 beyond)"
    )
    timeout: float = _opt(120.0, "seconds a request may take before it is cancelled (504)")
    prefill_budget: int = _opt(1024, "prompt positions prefilled per scheduler step beside decoding")
    device: str | None = _opt(None, "torch device (default: cuda when present, else cpu)")
    codec_workers: int = _opt(
        CODEC_WORKERS, "threads that read, resample and encode uploads (and decode audio), side by side"
    )

    def __post_init__(self) -> None:
        checks = {
            "max_batch": self.max_batch >= 1,
            "max_queue": self.max_queue >= 1,
            "max_upload_mb": self.max_upload_mb > 0,
            "max_audio_seconds": self.max_audio_seconds > 0,
            "timeout": self.timeout > 0,
            "prefill_budget": self.prefill_budget >= 1,
            "codec_workers": self.codec_workers >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"--{name.replace('_', '-')}={getattr(self, name)!r} must be positive")
        self.voices()  # fail on a malformed --voice at startup

    def torch_threads(self, available: int | None = None) -> int:
        """Torch intra-op threads that fit the `available` cores (default: all of this process): each of
        the scheduler thread and the codec workers runs its own team of that many, so they share them."""
        return max(1, (available or cores()) // (self.codec_workers + 1))

    def voices(self) -> dict[str, str]:
        """The `--voice NAME=PATH` entries as {name: path}."""
        out = {}
        for entry in self.voice:
            name, sep, path = entry.partition("=")
            if not sep or not name or not path:
                raise ValueError(f"--voice {entry!r}: expected NAME=PATH")
            if name == "default":
                raise ValueError("--voice default=...: 'default' is the model's own voice; pick another name")
            out[name] = path
        return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one `--flag` per `ServeConfig` field to parser."""
    for f in fields(ServeConfig):
        flag, help = "--" + f.name.replace("_", "-"), f.metadata["help"]
        if f.name == "voice":
            parser.add_argument(flag, action="append", default=[], metavar="NAME=PATH", help=help)
            continue
        kind = {"int": int, "float": float}.get(str(f.type), str)
        default = None if f.default is MISSING else f.default
        shown = "" if default is None else f" (default: {default})"
        parser.add_argument(flag, type=kind, default=default, help=help + shown)


def from_args(args: argparse.Namespace) -> ServeConfig:
    """The `ServeConfig` of parsed `add_arguments` flags."""
    return ServeConfig(**{f.name: getattr(args, f.name) for f in fields(ServeConfig)})
