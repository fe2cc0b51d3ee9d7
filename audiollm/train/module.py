"""LightningModule around `AudioLanguageModel`: masked multi-task loss, AdamW, warmup + cosine, export."""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer
from torch import nn

from audiollm.checkpoint import Checkpoint, CodecRef
from audiollm.model import PRESETS, AudioLanguageModel, ModelConfig, lm_loss
from audiollm.tasks import TASKS, TemplateOptions
from audiollm.text import HFTokenizer, SentencePieceTokenizer, tokenizer_kind
from audiollm.vocab import Vocab


class FitError(RuntimeError):
    """A training run cannot go on (a non-finite loss, a checkpoint that cannot be written or read); the
    message says what happened and what to do. `audiollm fit` prints it as one line and exits 1."""


def flops_per_token(config: ModelConfig, matmul_params: int, seq_len: int) -> float:
    """Training FLOPs per token position (forward + backward): 6 N for the N weights of matrix products
    (blocks and heads; embedding lookups are free) plus 12 n_layer d_model S for attention over S positions
    (PaLM, appendix B)."""
    return 6 * matmul_params + 12 * config.n_layer * config.d_model * seq_len


class LitAudioLM(L.LightningModule):
    """Trains one model on a batch mixing tasks (keys as in `audiollm.data.dataset`).

    Args:
        vocab: token layout (linked from the data module).
        preset: model size from `audiollm.model.PRESETS`.
        config: overrides of the preset's fields (e.g. {n_layer: 2}).
        init_from: a converted checkpoint directory (e.g. `audiollm convert gpt-neox`) to start from.
        lr: peak learning rate.
        weight_decay: AdamW decay on matrices (not on norms, biases, embeddings).
        betas: AdamW betas.
        warmup_steps: linear warmup steps.
        min_lr_ratio: the cosine ends at lr x this, at trainer.max_steps or, when trainer.max_time comes
            first, when the time is up (see `schedule_step`).
        stop_weight: weight of the text head's `<eos>` decision at the end of generated audio. Each audio
            step's text head decides between another frame and the end, so a clip of T frames has T-1
            "go on" decisions for one "stop": unweighted, `<eos>` was rarely the argmax at the end and
            generated speech ran on (about 3x flite's length).
        loss_balance: "token" (every trained text token and audio code weighs the same) or "example"
            (each example's mean weighs the same: ASR's few transcript tokens are not drowned by the K codes
            of every TTS frame); see `audiollm.model.lm_loss`.
        audio_embed_from: a codec (name or directory, normally the one that tokenised the data) whose
            codebook vectors start the audio embeddings (`AudioLanguageModel.init_audio_embed`); None keeps
            them random. Ignored with `init_from`.
    """

    def __init__(
        self,
        vocab: dict | None = None,
        preset: str = "tiny",
        config: dict | None = None,
        init_from: str | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        stop_weight: float = 1.0,
        loss_balance: str = "token",
        audio_embed_from: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        if vocab is None:
            raise ValueError("LitAudioLM needs `vocab` (linked from the data module by `audiollm fit`)")
        vocab = Vocab.from_dict(vocab) if isinstance(vocab, dict) else vocab
        if init_from:
            self.model = Checkpoint.load(init_from).load_model(init_from)
            if self.model.config.vocab != vocab:
                raise ValueError(
                    f"{init_from}: its vocabulary {self.model.config.vocab} differs from the data's {vocab}; "
                    "use its tokenizer (data.tokenizer, tokenizer_kind: hf) and convert with the codec's K"
                )
            self.model.train()
        else:
            if preset not in PRESETS:
                raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
            self.model = AudioLanguageModel(ModelConfig(vocab=vocab, **{**PRESETS[preset], **(config or {})}))
            if audio_embed_from:
                from audiollm.codecs import load_codec

                self.model.init_audio_embed(load_codec(audio_embed_from).codebook_vectors())
        # counted here, before FSDP shards the weights; a head tied to an embedding still multiplies
        self.matmul_params = sum(m.weight.numel() for m in self.model.modules() if isinstance(m, nn.Linear))
        self.flops_per_batch = 0.0  # FLOPs of the latest training batch, read by ThroughputMonitor (MFU)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Total, per-modality and per-task losses and accuracies of one batch."""
        text_logits, audio_logits = self.model(batch["text"], batch["audio"], batch["is_audio"])
        stops = batch["is_audio"] & (batch["text_target"] == self.model.config.vocab.eos)  # (B, S)
        weight = torch.where(stops, self.hparams.stop_weight, 1.0)
        targets = (
            batch["text_target"],
            batch["audio_target"],
            batch["text_mask"],
            batch["audio_mask"],
            weight,
        )
        out = lm_loss(text_logits, audio_logits, *targets, balance=self.hparams.loss_balance)
        with torch.no_grad():
            tm, am = batch["text_mask"], batch["audio_mask"]
            if tm.any():
                out["text_acc"] = (text_logits[tm].argmax(-1) == batch["text_target"][tm]).float().mean()
            if stops.any():  # how often <eos> is the text head's argmax where the audio should end
                out["stop_acc"] = (
                    (text_logits[stops].argmax(-1) == batch["text_target"][stops]).float().mean()
                )
            if am.any():
                out["audio_acc"] = (audio_logits[am].argmax(-1) == batch["audio_target"][am]).float().mean()
            for i, task in enumerate(TASKS):
                rows = batch["task"] == i
                if rows.any():
                    sub = (x[rows] for x in (text_logits, audio_logits, *targets))
                    out[f"loss_{task}"] = lm_loss(*sub)["loss"]
        return out

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.compute_loss(batch)
        B, S = batch["text"].shape
        self.check_finite(out["loss"])
        self.flops_per_batch = B * S * flops_per_token(self.model.config, self.matmul_params, S)
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=B)
        self.log_dict({f"train/{k}": v for k, v in out.items() if k != "loss"}, batch_size=B)
        self.log("train/ppl", torch.exp(out["loss"].detach()), batch_size=B)
        self.log("train/tokens", float(batch["text"].numel()), reduce_fx="sum", batch_size=B)
        return out["loss"]

    def check_finite(self, loss: torch.Tensor) -> None:
        """Stop the run (every rank at once) before a NaN/inf loss reaches the weights: a run that went on
        exited 0 and exported a model whose every tensor was NaN."""
        value = float(loss.detach())
        if not self.trainer.strategy.reduce_boolean_decision(math.isfinite(value), all=True):
            raise FitError(
                f"the training loss is not finite at step {self.trainer.global_step} (it is {value} on "
                f"rank {self.trainer.global_rank} or another); nothing was exported. Resume from a checkpoint "
                "before this step with a lower model.lr or a trainer.gradient_clip_val"
            )

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self.compute_loss(batch)
        B = batch["text"].shape[0]
        self.log("valid/loss", out["loss"], prog_bar=True, batch_size=B, sync_dist=True)
        # Per-task keys differ between ranks (each sees its own tasks): reducing them across ranks would hang.
        self.log_dict({f"valid/{k}": v for k, v in out.items() if k != "loss"}, batch_size=B)

    def configure_optimizers(self) -> dict:
        hp = self.hparams
        # by module, not by shape: under FSDP the parameters are flat shards by now
        embeddings = {id(m.weight) for m in self.model.modules() if isinstance(m, nn.Embedding)}
        matrices = {id(m.weight) for m in self.model.modules() if isinstance(m, nn.Linear)} - embeddings
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (decay if id(p) in matrices else no_decay).append(p)
        fused = self.device.type == "cuda"
        groups = [
            {"params": decay, "weight_decay": hp.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), fused=fused)
        total = max(self.trainer.max_steps, 1) if self.trainer.max_steps > 0 else 10_000
        timer = next((c for c in self.trainer.callbacks if isinstance(c, Timer)), None)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: warmup_cosine(
                schedule_step(step, total, timer), hp.warmup_steps, total, hp.min_lr_ratio
            ),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def schedule_step(step: int, total: int, timer: Timer | None) -> int:
    """Where the schedule is: `step`, or further on when trainer.max_time will end training before `total`.

    With a time limit, the schedule follows the larger of step / total and the fraction of the time used
    (Lightning's `Timer`, which checkpoints its elapsed time), so the cosine reaches its end when training
    stops instead of being cut off at a high learning rate. Without one, training is step-exact.
    """
    remaining = timer.time_remaining("train") if timer is not None else None
    if remaining is None:
        return step
    elapsed = timer.time_elapsed("train")
    return max(step, int(total * elapsed / (elapsed + remaining))) if elapsed + remaining > 0 else step


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Learning-rate multiplier: linear from 0 to 1 over `warmup` steps, then cosine down to `min_ratio`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def export(
    model: AudioLanguageModel,
    out: str | Path,
    tokenizer: SentencePieceTokenizer | HFTokenizer,
    codec: dict,
    template: TemplateOptions,
    tasks: list[str],
) -> Path:
    """Write an inference checkpoint (`audiollm.checkpoint`) of the model trained on data tokenised by
    `codec` (the data's codec.json) with `template` for `tasks`; a saved codec directory is copied in, so
    the folder is self-contained."""
    out = Path(out)
    reference = CodecRef.from_dict(codec, "the training data's codec.json")
    if Path(reference.codec).is_dir():
        shutil.copytree(reference.codec, out / "codec", dirs_exist_ok=True)
        reference = replace(reference, codec="codec")  # relative to the checkpoint
    checkpoint = Checkpoint(model.config, reference, tokenizer_kind(tokenizer), template, tuple(tasks))
    return checkpoint.save(out, model, tokenizer)


def full_model(trainer: L.Trainer, pl_module: LitAudioLM) -> AudioLanguageModel | None:
    """The trained model, whole, on rank 0 (None on other ranks); every rank must call this.

    Under FSDP each rank holds a shard: the strategy gathers the full state dict (a collective) and it is
    loaded into an unsharded model; under DDP or one device that is a copy of `pl_module.model`.
    """
    state = trainer.strategy.lightning_module_state_dict()  # keys "model.<name>"
    if not trainer.is_global_zero:
        return None
    prefix = "model."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    model = AudioLanguageModel(pl_module.model.config)
    model.load_state_dict(weights)
    return model


class ExportOnTrainEnd(L.Callback):
    """`save_pretrained` the trained model into `<checkpoint dir>/../model` when fitting ends."""

    def on_train_end(self, trainer: L.Trainer, pl_module: LitAudioLM) -> None:
        model = full_model(trainer, pl_module)
        if model is None:
            return
        dm = trainer.datamodule
        ckpt_dir = (
            Path(trainer.checkpoint_callback.dirpath)
            if trainer.checkpoint_callback
            else Path(trainer.log_dir)
        )
        out = export(model, ckpt_dir.parent / "model", dm.tokenizer, dm.codec, dm.options, dm.tasks)
        print(f"exported the trained model to {out}")
