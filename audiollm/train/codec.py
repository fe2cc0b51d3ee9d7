"""Training the native codec with Lightning: `CodecModule` (losses, optimisers) and `CodecDataModule` (crops).

Batch: (wav float32 (B, C, N), phone labels int64 (B, T)): N = segment_seconds x sample_rate samples of
random crops of manifest audio, T = N / hop_length frames labelled with the phone at each frame's centre
(`audiollm.data.phones`; IGNORE where a record has no `phones`).
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch
from encodec.msstftd import MultiScaleSTFTDiscriminator
from torch import nn
from torch.utils.data import DataLoader, Dataset
from vocos.discriminators import DiscriminatorR

from audiollm import audio
from audiollm.codecs import losses
from audiollm.codecs.base import quiet_weight_norm
from audiollm.codecs.native import NativeCodec, NativeCodecConfig
from audiollm.data.manifest import Record, read_manifest, record_seconds
from audiollm.data.phones import IGNORE, PHONES, frame_labels, record_phones

log = logging.getLogger(__name__)
DISCRIMINATORS = ("none", "msstft", "mrd")
MAX_DRAWS = 100
MRD_WINDOWS = (2048, 1024, 512)


@dataclass
class LossWeights:
    """Weights of the generator's loss terms."""

    mel: float = 1.0
    """multi-scale log-mel L1"""
    stft: float = 1.0
    """multi-resolution STFT (spectral convergence + log magnitude)"""
    waveform: float = 0.1
    """waveform L1"""
    commitment: float = 1.0
    """RVQ commitment"""
    adversarial: float = 1.0
    """hinge generator loss (only with the discriminator)"""
    feature_matching: float = 2.0
    """discriminator feature matching (only with the discriminator)"""
    phones: float = 0.0
    """phone classification from the first codebook's output (0: no phone head; needs `phones` in the data)"""


class Discriminator(nn.Module):
    """wav (B, 1, N) -> (logits per sub-discriminator, feature maps per sub-discriminator).

    `msstft`: EnCodec's multi-scale STFT discriminator (the `encodec` package; `filters` wide).
    `mrd`: the multi-resolution, multi-band complex-STFT discriminator of DAC and Vocos (the `vocos`
    package's `DiscriminatorR` at windows 2048, 1024, 512, `filters` channels). Both read the complex STFT,
    so they see phase.
    """

    def __init__(self, kind: str, filters: int = 32, channels: int = 1):
        super().__init__()
        if kind not in DISCRIMINATORS[1:]:
            raise ValueError(f"model.discriminator must be one of {DISCRIMINATORS}, got {kind!r}")
        self.kind = kind
        with quiet_weight_norm():
            if kind == "msstft":
                self.net = MultiScaleSTFTDiscriminator(filters, in_channels=channels)
            else:
                self.net = nn.ModuleList(
                    DiscriminatorR(window_length=w, channels=filters) for w in MRD_WINDOWS
                )

    def forward(self, wav: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        if self.kind == "msstft":
            return self.net(wav)
        outs = [d(wav[:, 0]) for d in self.net]  # each (logits (B, ...), feature maps)
        return [o[0] for o in outs], [o[1] for o in outs]


class CodecModule(L.LightningModule):
    """Trains a `NativeCodec`, optionally against a discriminator (`msstft` or `mrd`) with feature matching.

    The first batch sets the convolutions' scales (`NativeCodec.init_scales`). The first
    `autoencoder_steps` steps train encoder and decoder without quantisation; the codebooks are then k-means
    initialised on the latents of the next `kmeans_batches` batches (no optimiser step meanwhile).
    With quantiser dropout, a step uses a random K' in [min_codebooks, K] codebooks with probability
    `quantizer_dropout`, so one model serves several bitrates.

    `init_from` starts from a trained codec: a `CodecModule` checkpoint (.ckpt: codec and discriminator) or a
    `save_pretrained` directory (codec only). With `decoder_only`, the encoder, latent norm and codebooks
    stay frozen (eval mode, no codebook updates), so the codes an LM was trained on do not change while the
    decoder and discriminator go on learning.

    With `weights.phones` > 0, a linear head reads the first quantiser's output (straight-through, so the
    gradient reaches the encoder) and is trained to name the phone of each labelled frame (SpeechTokenizer
    and Mimi distil semantic features into codebook 0; here the teacher is flite's phone timings). The
    head is not part of the exported codec.
    """

    def __init__(
        self,
        codec: NativeCodecConfig = NativeCodecConfig(),  # noqa: B008 (a frozen-by-convention value)
        weights: LossWeights = LossWeights(),  # noqa: B008
        lr: float = 3e-4,
        betas: tuple[float, float] = (0.5, 0.9),
        gradient_clip: float = 1.0,
        quantizer_dropout: float = 0.5,
        min_codebooks: int = 1,
        kmeans_batches: int = 4,
        autoencoder_steps: int = 0,
        discriminator: str = "none",
        discriminator_filters: int = 32,
        discriminator_start_step: int = 0,
        init_from: str | None = None,
        decoder_only: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters({"codec": asdict(codec), "weights": asdict(weights)} | _plain(locals()))
        self.automatic_optimization = False
        self.codec = NativeCodec(codec)
        self.weights = weights
        self.mel_loss = losses.MultiScaleMelLoss(codec.sample_rate)
        self.stft_loss = losses.MultiResolutionSTFTLoss()
        self.discriminator = (
            Discriminator(discriminator, discriminator_filters, codec.channels)
            if discriminator != "none"
            else None
        )
        self.phone_head = nn.Linear(codec.dimension, len(PHONES)) if weights.phones > 0 else None
        if decoder_only and not init_from:
            raise ValueError("model.decoder_only needs model.init_from: a trained codec whose codes to keep")
        if init_from:
            self._load_trained(Path(init_from))
        self._kmeans_buffer: list[torch.Tensor] = []
        self._scaled = bool(init_from)  # set by init_scales on the first batch of a run from scratch
        self.batches_seen = 0  # batches trained on (k-means batches take no optimiser step); checkpointed
        self._rng_state: torch.Tensor | None = None

    def _load_trained(self, path: Path) -> None:
        """Load the codec (and, from a .ckpt, the discriminator) of a trained codec at `path`."""
        if path.is_dir():
            trained = NativeCodec.from_pretrained(path)
            self.codec.load_state_dict(trained.state_dict())
            return
        if not path.is_file():
            raise FileNotFoundError(f"model.init_from {path}: no such checkpoint file or codec directory")
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        parts = {"codec": self.codec, "discriminator": self.discriminator}
        for name, part in parts.items():
            own = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
            if part is not None and (own or name == "codec"):
                part.load_state_dict(own)  # strict: a checkpoint of another architecture is refused

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp = self.hparams
        trained = [self.codec.decoder] if hp.decoder_only else [self.codec, self.phone_head]
        params = [p for part in trained if part is not None for p in part.parameters()]
        optimizers = [torch.optim.AdamW(params, lr=hp.lr, betas=hp.betas)]
        if self.discriminator is not None:
            optimizers.append(torch.optim.AdamW(self.discriminator.parameters(), lr=hp.lr, betas=hp.betas))
        return optimizers

    def sample_num_codebooks(self) -> int:
        """K' for this step: all codebooks, or with probability `quantizer_dropout` a uniform draw."""
        K, hp = self.codec.config.num_codebooks, self.hparams
        if torch.rand(()) < hp.quantizer_dropout:
            return int(torch.randint(hp.min_codebooks, K + 1, ()))
        return K

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["batches_seen"] = self.batches_seen
        checkpoint["torch_rng_state"] = torch.get_rng_state()  # codebook draws and dead-code replacement

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.batches_seen = checkpoint.get("batches_seen", 0)
        self._rng_state = checkpoint.get(
            "torch_rng_state"
        )  # set at the next step: loaders draw from it first

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        batch, labels = batch
        if self._rng_state is not None:
            torch.set_rng_state(self._rng_state)
            self._rng_state = None
        self.batches_seen += 1
        if self.global_step == 0 and not self._scaled:
            self.codec.init_scales(batch)
            self._scaled = True
        if not self.codec.initialised and self.global_step < self.hparams.autoencoder_steps:
            n_q, recon, commit = 0, self.codec.decoder(self.codec.latent(batch)), batch.new_zeros(())
        elif not self.codec.initialised:
            self._collect_for_kmeans(batch)
            return
        elif self.hparams.decoder_only:
            n_q = self.sample_num_codebooks()
            for part in (self.codec.encoder, self.codec.norm, self.codec.quantizer):
                part.eval()  # every step: Lightning's fit puts all modules in train mode, which let the norm drift
            with torch.no_grad():
                quantized = self.codec.quantizer.decode(
                    self.codec.quantizer.encode(self.codec.latent(batch), n_q)
                )
            recon, commit = self.codec.decoder(quantized), batch.new_zeros(())
        else:
            n_q = self.sample_num_codebooks()
            recon, codes, commit, latent = self.codec(batch, n_q)
        terms = {
            "mel": self.mel_loss(recon, batch),
            "stft": self.stft_loss(recon, batch),
            "waveform": torch.nn.functional.l1_loss(recon, batch),
            "commitment": commit,
        }
        if self.phone_head is not None and n_q > 0 and not self.hparams.decoder_only:
            terms["phones"] = self.phone_loss(latent, codes[0], labels)
        if self.discriminator is not None and self.global_step >= self.hparams.discriminator_start_step:
            terms |= self.adversarial_step(recon, batch)
        total = sum(getattr(self.weights, name) * value for name, value in terms.items())
        self._step(self.optimizers() if self.discriminator is None else self.optimizers()[0], total)
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, on_step=True)
        self.log("train/loss", total.detach(), on_step=True, prog_bar=True)
        self.log("train/codebooks", float(n_q), on_step=True)

    def phone_loss(self, latent: torch.Tensor, first: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the phone head on the first codebook's vectors of codes `first` (B, T), passed
        straight through to `latent` (B, D, T), against `labels` (B, T); 0 when no frame is labelled.
        Logs the head's frame accuracy."""
        known = labels != IGNORE
        if not known.any():
            return latent.new_zeros(())
        chosen = self.codec.quantizer.layers[0].decode(first)  # (B, D, T)
        logits = self.phone_head((latent + (chosen - latent).detach()).transpose(1, 2))  # (B, T, phones)
        self.log("train/phone_acc", (logits.argmax(-1) == labels)[known].float().mean(), on_step=True)
        return nn.functional.cross_entropy(logits[known], labels[known])

    def progress_count(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, str]:
        """What a batch (wav (B, C, N), labels) adds to the throughput `ProgressLog` prints: seconds of audio."""
        wav = batch[0]
        return wav.shape[0] * wav.shape[-1] / self.codec.sample_rate, "audio-s"

    def adversarial_step(self, recon: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
        """Update the discriminator on (real, recon.detach()); return the generator's adversarial terms."""
        real_logits, real_fmaps = self.discriminator(real)
        fake_logits, _ = self.discriminator(recon.detach())
        d_loss = losses.discriminator_hinge_loss(real_logits, fake_logits)
        self._step(self.optimizers()[1], d_loss)
        self.log("train/discriminator", d_loss.detach(), on_step=True)
        fake_logits, fake_fmaps = self.discriminator(recon)
        return {
            "adversarial": losses.generator_adversarial_loss(fake_logits),
            "feature_matching": losses.feature_matching_loss(real_fmaps, fake_fmaps),
        }

    def _step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad()
        self.manual_backward(loss)
        self.clip_gradients(
            optimizer, gradient_clip_val=self.hparams.gradient_clip, gradient_clip_algorithm="norm"
        )
        optimizer.step()

    def _collect_for_kmeans(self, batch: torch.Tensor) -> None:
        self._kmeans_buffer.append(batch)
        if len(self._kmeans_buffer) >= self.hparams.kmeans_batches:
            self.codec.init_codebooks(self._kmeans_buffer)
            self._kmeans_buffer = []


class CropDataset(Dataset):
    """Item i: a deterministic random crop (C, N) float32 of one record, chosen with probability ~ duration,
    and its frames' phone labels int64 (N / sample_rate x frame_rate,)."""

    def __init__(self, records: list[Record], durations: list[float], phones: list, sample_rate: int,
                 channels: int, frame_rate: float, segment_seconds: float, length: int, seed: int,
                 offset: int = 0):  # fmt: skip
        self.records, self.durations, self.phones = records, durations, phones
        self.sample_rate, self.channels, self.frame_rate = sample_rate, channels, frame_rate
        self.segment_seconds, self.length, self.seed, self.offset = segment_seconds, length, seed, offset

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self.length:  # also ends `for crop in dataset`, which stops at an IndexError
            raise IndexError(f"crop {i} of a dataset of {self.length}")
        rng = random.Random(self.seed * 1_000_003 + self.offset + i)
        for _ in range(MAX_DRAWS):  # a clip that cannot be read is named in the log and another is drawn
            (k,) = rng.choices(range(len(self.records)), weights=self.durations)
            rec, span = self.records[k], self.durations[k]
            start = rec.start + rng.uniform(0.0, max(0.0, span - self.segment_seconds))
            try:
                wav, _ = audio.load(
                    rec.audio, self.sample_rate, self.channels, start, min(span, self.segment_seconds)
                )
                break
            except audio.AudioError as e:
                log.warning("skipping an unreadable training clip: %s", e)
        else:
            raise RuntimeError(f"{MAX_DRAWS} training clips in a row could not be read; check the manifests")
        n = round(self.segment_seconds * self.sample_rate)
        labels = frame_labels(
            self.phones[k], start, round(self.segment_seconds * self.frame_rate), self.frame_rate
        )
        return torch.nn.functional.pad(wav[:, :n], (0, n - min(n, wav.shape[1]))), labels  # (C, N), (T,)


class CodecDataModule(L.LightningDataModule):
    """Random crops of the audio listed in JSONL manifests (`audiollm.data.manifest`).

    Its state (examples served) is checkpointed, so a resumed run continues with new crops. Records may
    carry `phones` (`audiollm.data.phones`), labelled at `frame_rate` (the recipe links it to the codec's).
    """

    def __init__(
        self,
        train_manifests: list[str],
        sample_rate: int = 16000,
        channels: int = 1,
        frame_rate: float = 50.0,
        segment_seconds: float = 1.0,
        batch_size: int = 8,
        num_workers: int = 0,
        examples_per_epoch: int = 1_000_000,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.records: list[Record] = []
        self.durations: list[float] = []
        self.phones: list[list[tuple[int, float]] | None] = []
        self.examples_served = 0

    def setup(self, stage: str | None = None) -> None:
        if self.records:
            return
        for path in self.hparams.train_manifests:
            for rec in read_manifest(path):
                try:
                    span = record_seconds(rec)
                except audio.AudioError as e:
                    log.warning("%s: skipping a training clip that cannot be read: %s", path, e)
                    continue
                self.records.append(rec)
                self.durations.append(span)
                self.phones.append(record_phones(rec, path))
        if not self.records:
            raise ValueError(
                f"data.train_manifests {self.hparams.train_manifests}: no records; list some audio"
            )

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        dataset = CropDataset(self.records, self.durations, self.phones, hp.sample_rate, hp.channels,
                              hp.frame_rate, hp.segment_seconds, hp.examples_per_epoch, hp.seed,
                              self.examples_served)  # fmt: skip
        return DataLoader(dataset, batch_size=hp.batch_size, num_workers=hp.num_workers, drop_last=True)

    def state_dict(self) -> dict:
        module = self.trainer.lightning_module if self.trainer else None
        return {"examples_served": getattr(module, "batches_seen", 0) * self.hparams.batch_size}

    def load_state_dict(self, state: dict) -> None:
        self.examples_served = int(state.get("examples_served", 0))


class ExportCodec(L.Callback):
    """At the end of training, export the codec with `save_pretrained` to `<checkpoint dirpath>/codec`."""

    def on_train_end(self, trainer: L.Trainer, pl_module: CodecModule) -> None:
        if trainer.is_global_zero and pl_module.codec.initialised:
            pl_module.codec.save_pretrained(Path(trainer.checkpoint_callback.dirpath) / "codec")


def export_checkpoint(ckpt_path: str | Path, directory: str | Path) -> Path:
    """Export the codec of a `CodecModule` Lightning checkpoint (e.g. one left by a killed run) with save_pretrained."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    codec = NativeCodec(NativeCodecConfig(**ckpt["hyper_parameters"]["codec"]))
    prefix = "codec."
    codec.load_state_dict(
        {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    )
    return codec.save_pretrained(directory)


def _plain(args: dict) -> dict:
    """The scalar hyperparameters of an __init__'s locals()."""
    return {k: v for k, v in args.items() if k not in ("self", "codec", "weights", "__class__")}
