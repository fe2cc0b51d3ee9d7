"""EnCodec (Défossez et al., 2022) through the `encodec` package, behind the Codec contract.

Weights come from, in order: `checkpoint=PATH`; the environment variable
`AUDIOLLM_ENCODEC_CHECKPOINT` (a checkpoint file, or a folder holding the published file names);
the torch hub cache where the encodec package puts its downloads; a download (when online).
Offline with none of these, loading fails at once with a message naming the missing file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from encodec import EncodecModel
from safetensors.torch import load_file

from audiollm.codecs.base import CodecError, check_codes, prepare_input, quiet_weight_norm, rvq_vectors
from audiollm.model import save_directory

ENV_CHECKPOINT = "AUDIOLLM_ENCODEC_CHECKPOINT"
# Codes carry no gain for the 48 kHz model (it normalises loudness before encoding):
# its decoded audio is brought to this RMS (-20 dBFS).
DECODE_RMS_48KHZ = 0.1


@dataclass(frozen=True)
class EncodecVariant:
    build: Callable[..., EncodecModel]
    checkpoint: str  # the published file name
    default_bandwidth: float


VARIANTS = {
    "encodec_24khz": EncodecVariant(EncodecModel.encodec_model_24khz, "encodec_24khz-d7cc33bc.th", 6.0),
    "encodec_48khz": EncodecVariant(EncodecModel.encodec_model_48khz, "encodec_48khz-7e698e3e.th", 6.0),
}


def resolve_checkpoint(name: str, checkpoint: str | Path | None = None, download: bool = True) -> Path:
    """Find the published state-dict file for `name`; download it only when nothing local exists."""
    filename = VARIANTS[name].checkpoint
    candidates = []
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise CodecError(f"{path}: EnCodec checkpoint not found (checkpoint= for {name})")
        return path
    if os.environ.get(ENV_CHECKPOINT):
        env = Path(os.environ[ENV_CHECKPOINT])
        path = env / filename if env.is_dir() else env
        if not path.is_file():
            raise CodecError(f"{path}: EnCodec checkpoint not found (from ${ENV_CHECKPOINT})")
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    candidates.append(cached)
    if cached.is_file():
        return cached
    if download:
        url = f"https://dl.fbaipublicfiles.com/encodec/v0/{filename}"
        try:
            torch.hub.download_url_to_file(url, str(cached), hash_prefix=None, progress=True)
            return cached
        except OSError:  # URLError is an OSError: offline, DNS failure, refused
            cached.unlink(missing_ok=True)
    raise CodecError(
        f"EnCodec weights for '{name}' are missing: {filename} is not in {cached.parent} and could not be "
        f"downloaded. Download {filename} on a machine with internet access (the encodec package's release), "
        f"then pass checkpoint=PATH (CLI: --checkpoint PATH) or set {ENV_CHECKPOINT}=PATH."
    )


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a published `.th` state dict (never unpickling code) or a `.safetensors` file."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt or non-tensor pickles
        raise CodecError(f"{path}: not a readable EnCodec state dict ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise CodecError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


class EncodecCodec:
    """An `encodec` model with the Codec contract. `bandwidth` (kbps) sets K = number of codebooks."""

    def __init__(self, name: str, model: EncodecModel, bandwidth: float | None = None, device: str = "cpu"):
        if name not in VARIANTS:
            raise CodecError(f"unknown EnCodec variant '{name}'; known: {', '.join(VARIANTS)}")
        bandwidth = VARIANTS[name].default_bandwidth if bandwidth is None else float(bandwidth)
        if bandwidth not in model.target_bandwidths:
            raise CodecError(
                f"{name}: bandwidth {bandwidth} kbps not supported; use one of {model.target_bandwidths}"
            )
        model.set_target_bandwidth(bandwidth)
        model.segment = None  # one frame per clip, so codes form one time axis (see module docstring)
        self.name = name
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.bandwidth = bandwidth
        self.sample_rate: int = model.sample_rate
        self.channels: int = model.channels
        self.frame_rate: float = float(model.frame_rate)
        self.num_codebooks: int = model.quantizer.get_num_quantizers_for_bandwidth(
            model.frame_rate, bandwidth
        )
        self.codebook_size: int = model.quantizer.bins

    @classmethod
    def from_name(
        cls,
        name: str,
        checkpoint: str | Path | None = None,
        bandwidth: float | None = None,
        device: str = "cpu",
        download: bool = True,
    ) -> EncodecCodec:
        """Build `name`'s architecture and load its published weights (see the module docstring)."""
        if name not in VARIANTS:
            raise CodecError(f"unknown EnCodec variant '{name}'; known: {', '.join(VARIANTS)}")
        path = resolve_checkpoint(name, checkpoint, download)
        with quiet_weight_norm():
            model = VARIANTS[name].build(pretrained=False)
        _load_weights(model, load_state_dict(path), path)
        return cls(name, model, bandwidth, device)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, bandwidth: float | None = None, device: str = "cpu"
    ) -> EncodecCodec:
        """Load a directory written by `save_pretrained` (config.json + model.safetensors)."""
        directory = Path(directory)
        config = json.loads((directory / "config.json").read_text())
        name = config.get("name")
        if name not in VARIANTS:
            raise CodecError(f"{directory / 'config.json'}: field 'name' must be one of {list(VARIANTS)}")
        with quiet_weight_norm():
            model = VARIANTS[name].build(pretrained=False)
        path = directory / "model.safetensors"
        _load_weights(model, load_state_dict(path), path)
        return cls(name, model, config.get("bandwidth") if bandwidth is None else bandwidth, device)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write config.json and model.safetensors (weights, no pickle); `load_codec(directory)` reads them."""
        config = {"codec_type": "encodec", "name": self.name, "bandwidth": self.bandwidth}
        return save_directory(directory, self.model.state_dict(), config)

    @torch.inference_mode()
    def encode(self, wav: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """wav: float (B, C, N) at `sample_rate` (default: the codec's) -> codes int64 (B, K, T)."""
        x = prepare_input(self, wav, sample_rate).to(self.device)
        (codes, _scale), = self.model.encode(x)  # fmt: skip
        return codes

    def codebook_vectors(self) -> torch.Tensor:
        """(K, C, D) float32: the latent vector of every code, for all K codebooks the model has."""
        return rvq_vectors(self.model.quantizer.vq)

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes: int (B, K, T), K <= num_codebooks -> wav float32 (B, C, T * sample_rate / frame_rate)."""
        check_codes(self, codes)
        wav = self.model.decode([(codes.to(self.device), None)])
        if self.model.normalize:
            rms = wav.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
            wav = wav * (DECODE_RMS_48KHZ / (rms + 1e-8))
        return wav.float()


def _load_weights(model: EncodecModel, state: dict[str, torch.Tensor], path: Path) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CodecError(
            f"{path}: does not match the EnCodec architecture "
            f"({len(missing)} missing keys, e.g. {missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})"
        )
