"""The native trainable codec: a SEANet encoder, residual vector quantisation, and one of two decoders.

Built from the `encodec` package's modules (SEANet convolutions, RVQ with EMA codebooks, k-means
initialisation and dead-code replacement) and the `vocos` package's (ConvNeXt backbone, inverse-STFT
head); trained by `audiollm fit --config recipes/codec/config.yaml`. Decoders:
- `seanet`: transposed convolutions up to the sample rate (EnCodec's decoder);
- `istft`: ConvNeXt blocks at the frame rate and a head that predicts each frame's STFT magnitude *and
  phase*, turned into audio by an inverse STFT with window 4 x hop (Vocos, WavTokenizer). It runs at the
  frame rate, so it costs far fewer operations per second of audio than upsampling convolutions.
Frame rate = sample_rate / prod(strides); bitrate = frame_rate x K x log2(codebook_size).
One model serves several bitrates: it is trained with quantiser dropout, and `num_codebooks`
(at load time, or `set_num_codebooks`) chooses how many of its codebooks encode uses.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from encodec import distrib
from encodec.modules import SEANetDecoder, SEANetEncoder
from encodec.quantization.core_vq import ResidualVectorQuantization
from safetensors.torch import load_file
from torch import nn
from vocos.heads import ISTFTHead
from vocos.models import VocosBackbone

from audiollm.codecs.base import CodecError, check_codes, prepare_input, quiet_weight_norm, rvq_vectors
from audiollm.codecs.rvq import init_codebook_
from audiollm.model import CONFIG_FILE, WEIGHTS_FILE, save_directory

TRAINING_BUFFERS = ("embed_avg", "cluster_size")
"""EMA statistics that only training updates; an inference-only export may leave them out."""


@dataclass
class NativeCodecConfig:
    """Architecture of a native codec; saved as `config.json` beside the weights."""

    sample_rate: int = 16000
    """audio sample rate in Hz (16000 speech, 24000 / 32000 music)"""
    channels: int = 1
    """audio channels"""
    strides: tuple[int, ...] = (2, 4, 5, 8)
    """encoder downsampling strides, first to last; frame rate = sample_rate / prod(strides)"""
    n_filters: int = 32
    """SEANet base width (doubles after each stride)"""
    n_residual_layers: int = 1
    """residual blocks per resolution"""
    lstm_layers: int = 2
    """LSTM layers at the bottleneck of encoder and decoder (0 for none)"""
    dimension: int = 128
    """latent (and codebook vector) dimension"""
    num_codebooks: int = 12
    """RVQ depth K the model is trained with (the most it can encode with)"""
    codebook_size: int = 1024
    """entries per codebook"""
    ema_decay: float = 0.99
    """EMA decay of codebook updates"""
    kmeans_iters: int = 50
    """k-means iterations of the codebook initialisation"""
    dead_code_threshold: float = 2.0
    """codes whose EMA usage count per step falls below this are replaced by vectors of the batch; keep it
    well under (frames per batch) / codebook_size, or every code counts as dead at every step"""
    latent_norm: bool = True
    """centre and scale the latent per channel (batch statistics in training, running ones after) before
    quantisation; without it the latent drifted to a large constant offset that codebook 0 could not follow
    (10 codes used where the others used 100). Files written before this field load with it off."""
    decoder: str = "seanet"
    """"seanet" (upsampling convolutions) or "istft" (frame-rate ConvNeXt + inverse-STFT magnitude/phase head)"""
    decoder_dim: int = 256
    """width of the istft decoder's ConvNeXt blocks (their hidden layer is 3x this)"""
    decoder_layers: int = 8
    """ConvNeXt blocks of the istft decoder"""

    @property
    def hop_length(self) -> int:
        return math.prod(self.strides)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length


PRESETS: dict[str, dict] = {
    "speech16k": dict(sample_rate=16000, strides=(2, 4, 5, 8), num_codebooks=12, decoder="istft"),
    "music24k": dict(sample_rate=24000, strides=(2, 4, 5, 8), num_codebooks=16),
    "music32k": dict(sample_rate=32000, strides=(2, 4, 5, 8), num_codebooks=16),
    "tiny": dict(
        n_filters=4,
        lstm_layers=0,
        dimension=16,
        num_codebooks=4,
        codebook_size=32,
        kmeans_iters=2,
        decoder_dim=16,
        decoder_layers=1,
    ),
}
DECODERS = ("seanet", "istft")


class ISTFTDecoder(nn.Module):
    """Quantised latent (B, D, T) -> wav (B, 1, T * hop): Vocos ConvNeXt backbone + inverse-STFT head.

    The head predicts log-magnitude and phase of an STFT with window 4 x hop and hop = the codec's hop
    ("same" padding, so T frames give exactly T * hop samples).
    """

    def __init__(self, config: NativeCodecConfig):
        super().__init__()
        dim = config.decoder_dim
        self.backbone = VocosBackbone(config.dimension, dim, 3 * dim, config.decoder_layers)
        self.head = ISTFTHead(dim, n_fft=4 * config.hop_length, hop_length=config.hop_length, padding="same")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(z))[:, None]  # (B, 1, T * hop)


class NativeCodec(nn.Module):
    """SEANet + RVQ codec implementing the `Codec` protocol.

    encode: wav float32 (B, C, N) -> codes int64 (B, K, T) with T = ceil(N / hop_length).
    decode: codes (B, K', T), K' <= K -> wav float32 (B, C, T * hop_length).
    """

    def __init__(self, config: NativeCodecConfig, num_codebooks: int | None = None):
        super().__init__()
        self.config = config
        self.sample_rate = config.sample_rate
        self.channels = config.channels
        self.frame_rate = config.frame_rate
        self.codebook_size = config.codebook_size
        seanet = dict(
            channels=config.channels,
            dimension=config.dimension,
            n_filters=config.n_filters,
            n_residual_layers=config.n_residual_layers,
            ratios=list(reversed(config.strides)),  # SEANet takes the decoder's (upsampling) order
            lstm=config.lstm_layers,
        )
        if config.decoder not in DECODERS:
            raise CodecError(f"decoder must be one of {DECODERS}, got {config.decoder!r}")
        if config.decoder == "istft" and config.channels != 1:
            raise CodecError(f"the istft decoder makes mono audio; got channels={config.channels}")
        with quiet_weight_norm():
            self.encoder = SEANetEncoder(**seanet)
            self.decoder = SEANetDecoder(**seanet) if config.decoder == "seanet" else ISTFTDecoder(config)
        self.norm = (
            nn.BatchNorm1d(config.dimension, affine=False, momentum=0.01)
            if config.latent_norm
            else nn.Identity()
        )
        self.quantizer = ResidualVectorQuantization(
            num_quantizers=config.num_codebooks,
            dim=config.dimension,
            codebook_size=config.codebook_size,
            decay=config.ema_decay,
            kmeans_init=True,
            kmeans_iters=config.kmeans_iters,
            threshold_ema_dead_code=config.dead_code_threshold,
        )
        self.num_codebooks = config.num_codebooks
        self.set_num_codebooks(num_codebooks or config.num_codebooks)

    def set_num_codebooks(self, k: int) -> None:
        """Choose how many codebooks `encode` uses (bitrate = frame_rate x k x log2(codebook_size))."""
        if not 1 <= k <= self.config.num_codebooks:
            raise CodecError(
                f"num_codebooks must be in [1, {self.config.num_codebooks}] for this codec, got {k}"
            )
        self.num_codebooks = k

    def pad(self, wav: torch.Tensor) -> torch.Tensor:
        """Right-pad (B, C, N) with zeros to a whole number of frames."""
        hop = self.config.hop_length
        return nn.functional.pad(wav, (0, -wav.shape[-1] % hop))

    def forward(
        self, wav: torch.Tensor, n_q: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass over `n_q` codebooks (all when None).

        wav (B, C, N) with N a multiple of hop_length -> (reconstruction (B, C, N),
        codes int64 (n_q, B, T), commitment loss scalar, the latent float (B, D, T) that was quantised).
        """
        z = self.latent(wav)  # (B, D, T)
        quantized, codes, commit = self.quantizer(z, n_q=n_q or self.config.num_codebooks)
        return self.decoder(quantized), codes, commit.mean(), z

    def latent(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, C, N), N a multiple of hop_length -> the latent the quantiser reads, float (B, D, T)."""
        return self.norm(self.encoder(wav))

    @torch.no_grad()
    def init_scales(self, wav: torch.Tensor) -> None:
        """Data-dependent initialisation of the weight-normalised convolutions (Salimans & Kingma, 2016).

        In one pass over wav (B, C, N), each weight-normalised convolution's gain and bias are set so that its
        output has zero mean per channel and unit standard deviation; a SEANet decoder's last one matches the
        std of `wav` (the istft decoder's layer norms need no such start). PyTorch's default initialisation
        shrinks the signal about 2x per layer, which left the latent nearly constant in time and the codec
        stuck predicting an average spectrum on short CPU runs.
        """
        convs = [
            m
            for m in self.modules()
            if isinstance(m, nn.Conv1d | nn.ConvTranspose1d) and hasattr(m, "weight_g")
        ]
        target = {m: 1.0 for m in convs}
        if self.config.decoder == "seanet":
            target[convs[-1]] = float(wav.std())

        def normalise(conv: nn.Module, _inputs, out: torch.Tensor) -> torch.Tensor:
            mean = out.mean(dim=(0, 2))  # (channels,)
            std = (out - mean[:, None]).std() / target[conv]
            conv.weight_g.div_(std)
            conv.bias.sub_(mean).div_(std)
            return (out - mean[:, None]) / std  # what the updated layer now outputs

        hooks = [m.register_forward_hook(normalise) for m in convs]
        try:
            self.decoder(self.latent(wav))
        finally:
            for hook in hooks:
                hook.remove()
        distrib.broadcast_tensors(self.parameters())

    @torch.no_grad()
    def init_codebooks(self, wavs: list[torch.Tensor]) -> None:
        """k-means initialise every codebook from the latents of several batches of (B, C, N) audio.

        Layer k is fitted to the residual left by layers < k. Layers already initialised are kept.
        """
        z = torch.cat([self.latent(w).transpose(1, 2).flatten(0, 1) for w in wavs])  # (sum B*T, D)
        for layer in self.quantizer.layers:
            book = layer._codebook
            init_codebook_(book, z, self.config.kmeans_iters)
            z = z - book.decode(book.encode(z))

    @property
    def initialised(self) -> bool:
        """Whether every codebook holds trained or k-means vectors (not the zero placeholders)."""
        return all(bool(layer._codebook.inited) for layer in self.quantizer.layers)

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """wav float (B, C, N) at `sample_rate` (default: the codec's) -> codes int64 (B, K, T)."""
        self._check_initialised()
        x = self.pad(prepare_input(self, wav, sample_rate).to(self._device))
        codes = self.quantizer.encode(self.latent(x), n_q=self.num_codebooks)  # (K, B, T)
        return codes.transpose(0, 1).contiguous()  # (B, K, T)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes int (B, K', T) with K' <= K -> wav float32 (B, C, T * hop_length)."""
        self._check_initialised()
        check_codes(self, codes)
        z = self.quantizer.decode(codes.to(self._device).transpose(0, 1))  # (B, D, T)
        return self.decoder(z)

    def codebook_vectors(self) -> torch.Tensor:
        """(K, C, D) float32: the latent vector of every code, for all K codebooks the codec has."""
        return rvq_vectors(self.quantizer)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `config.json` (codec_type "native") and `model.safetensors` to `directory`."""
        return save_directory(directory, self.state_dict(), {"codec_type": "native", **asdict(self.config)})

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: str | torch.device = "cpu", num_codebooks: int | None = None
    ) -> NativeCodec:
        """Load a directory written by `save_pretrained`; `num_codebooks` picks the bitrate (default: all)."""
        directory = Path(directory)
        config = read_config(directory / CONFIG_FILE)
        weights = directory / WEIGHTS_FILE
        if not weights.is_file():
            raise CodecError(
                f"{weights}: missing; a native codec directory needs config.json and {WEIGHTS_FILE}"
            )
        codec = cls(config, num_codebooks)
        try:
            missing, unexpected = codec.load_state_dict(load_file(str(weights)), strict=False)
        except RuntimeError as e:
            raise CodecError(f"{weights}: weights do not match {directory / CONFIG_FILE} ({e})") from None
        if unexpected or any(not k.endswith(TRAINING_BUFFERS) for k in missing):
            raise CodecError(f"{weights}: weights do not match {directory / CONFIG_FILE} "
                             f"(missing {missing}, unexpected {unexpected})")  # fmt: skip
        return codec.to(device).eval()

    def _check_initialised(self) -> None:
        if not self.initialised:
            raise CodecError("codebooks are not initialised: train the codec (or call init_codebooks) first")

    @property
    def _device(self) -> torch.device:
        return next(self.parameters()).device


def read_config(path: Path) -> NativeCodecConfig:
    """Parse and check a native codec's config.json; errors name the file and the field."""
    if not path.is_file():
        raise CodecError(f"{path}: missing; save the codec with save_pretrained first")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CodecError(f"{path}: not valid JSON ({e.msg})") from None
    if raw.pop("codec_type", None) != "native":
        raise CodecError(f"{path}: field 'codec_type' must be 'native'")
    known = {f.name for f in fields(NativeCodecConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise CodecError(f"{path}: unknown field(s) {unknown}; expected some of {sorted(known)}")
    raw["strides"] = tuple(raw.get("strides", NativeCodecConfig.strides))
    raw.setdefault("latent_norm", False)  # written before the field existed: no normalisation layer
    return NativeCodecConfig(**raw)
