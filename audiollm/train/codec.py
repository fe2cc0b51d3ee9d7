"""Training the native codec with Lightning: `CodecModule` (losses, optimisers) and `CodecDataModule` (crops).

Batch: wav float32 (B, C, N), N = segment_seconds x sample_rate, random crops of manifest audio.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch
from encodec.msstftd import MultiScaleSTFTDiscriminator
from torch.utils.data import DataLoader, Dataset

from audiollm import audio
from audiollm.codecs import losses
from audiollm.codecs.native import NativeCodec, NativeCodecConfig
from audiollm.data.manifest import Record, read_manifest


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


class CodecModule(L.LightningModule):
    """Trains a `NativeCodec`; the discriminator (multi-scale STFT) is optional.

    The first batch sets the convolutions' scales (`NativeCodec.init_scales`). The first
    `autoencoder_steps` steps train encoder and decoder without quantisation; the codebooks are then k-means
    initialised on the latents of the next `kmeans_batches` batches (no optimiser step meanwhile).
    With quantiser dropout, a step uses a random K' in [min_codebooks, K] codebooks with probability
    `quantizer_dropout`, so one model serves several bitrates.
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
        discriminator: bool = False,
        discriminator_filters: int = 32,
        discriminator_start_step: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters({"codec": asdict(codec), "weights": asdict(weights)} | _plain(locals()))
        self.automatic_optimization = False
        self.codec = NativeCodec(codec)
        self.weights = weights
        self.mel_loss = losses.MultiScaleMelLoss(codec.sample_rate)
        self.stft_loss = losses.MultiResolutionSTFTLoss()
        self.discriminator = (
            MultiScaleSTFTDiscriminator(discriminator_filters, in_channels=codec.channels)
            if discriminator
            else None
        )
        self._kmeans_buffer: list[torch.Tensor] = []
        self._scaled = False  # set by init_scales on the first batch of a run that starts from step 0

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        hp = self.hparams
        optimizers = [torch.optim.AdamW(self.codec.parameters(), lr=hp.lr, betas=hp.betas)]
        if self.discriminator is not None:
            optimizers.append(torch.optim.AdamW(self.discriminator.parameters(), lr=hp.lr, betas=hp.betas))
        return optimizers

    def sample_num_codebooks(self) -> int:
        """K' for this step: all codebooks, or with probability `quantizer_dropout` a uniform draw."""
        K, hp = self.codec.config.num_codebooks, self.hparams
        if torch.rand(()) < hp.quantizer_dropout:
            return int(torch.randint(hp.min_codebooks, K + 1, ()))
        return K

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        if self.global_step == 0 and not self._scaled:
            self.codec.init_scales(batch)
            self._scaled = True
        if self.global_step < self.hparams.autoencoder_steps:
            n_q, recon, commit = 0, self.codec.decoder(self.codec.encoder(batch)), batch.new_zeros(())
        elif not self.codec.initialised:
            self._collect_for_kmeans(batch)
            return
        else:
            n_q = self.sample_num_codebooks()
            recon, _, commit = self.codec(batch, n_q)
        terms = {
            "mel": self.mel_loss(recon, batch),
            "stft": self.stft_loss(recon, batch),
            "waveform": torch.nn.functional.l1_loss(recon, batch),
            "commitment": commit,
        }
        if self.discriminator is not None and self.global_step >= self.hparams.discriminator_start_step:
            terms |= self.adversarial_step(recon, batch)
        total = sum(getattr(self.weights, name) * value for name, value in terms.items())
        self._step(self.optimizers() if self.discriminator is None else self.optimizers()[0], total)
        self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, on_step=True)
        self.log("train/loss", total.detach(), on_step=True, prog_bar=True)
        self.log("train/codebooks", float(n_q), on_step=True)

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
    """Item i: a deterministic random crop (C, N) float32 of one record, chosen with probability ~ duration."""

    def __init__(self, records: list[Record], durations: list[float], sample_rate: int, channels: int,
                 segment_seconds: float, length: int, seed: int, offset: int = 0):  # fmt: skip
        self.records, self.durations = records, durations
        self.sample_rate, self.channels = sample_rate, channels
        self.segment_seconds, self.length, self.seed, self.offset = segment_seconds, length, seed, offset

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> torch.Tensor:
        rng = random.Random(self.seed * 1_000_003 + self.offset + i)
        (k,) = rng.choices(range(len(self.records)), weights=self.durations)
        rec, span = self.records[k], self.durations[k]
        start = rec.start + rng.uniform(0.0, max(0.0, span - self.segment_seconds))
        wav, _ = audio.load(
            rec.audio, self.sample_rate, self.channels, start, min(span, self.segment_seconds)
        )
        n = round(self.segment_seconds * self.sample_rate)
        return torch.nn.functional.pad(wav[:, :n], (0, n - min(n, wav.shape[1])))  # (C, N)


class CodecDataModule(L.LightningDataModule):
    """Random crops of the audio listed in JSONL manifests (`audiollm.data.manifest`).

    Its state (examples served) is checkpointed, so a resumed run continues with new crops.
    """

    def __init__(
        self,
        train_manifests: list[str],
        sample_rate: int = 16000,
        channels: int = 1,
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
        self.examples_served = 0

    def setup(self, stage: str | None = None) -> None:
        if self.records:
            return
        for path in self.hparams.train_manifests:
            for rec in read_manifest(path):
                meta = audio.info(rec.audio)
                span = rec.duration or meta.frames / meta.samplerate - rec.start
                self.records.append(rec)
                self.durations.append(span)
        if not self.records:
            raise ValueError(
                f"data.train_manifests {self.hparams.train_manifests}: no records; list some audio"
            )

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        dataset = CropDataset(self.records, self.durations, hp.sample_rate, hp.channels, hp.segment_seconds,
                              hp.examples_per_epoch, hp.seed, self.examples_served)  # fmt: skip
        return DataLoader(dataset, batch_size=hp.batch_size, num_workers=hp.num_workers, drop_last=True)

    def state_dict(self) -> dict:
        served = self.trainer.global_step * self.hparams.batch_size if self.trainer else 0
        return {"examples_served": served}

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
