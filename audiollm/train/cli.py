"""`audiollm fit --config recipes/NAME/config.yaml`: one command for every recipe, built on LightningCLI.

The YAML's top-level `kind` picks the (LightningModule, LightningDataModule) pair from `RECIPES`;
the rest of the YAML holds values only: `model.*` and `data.*` are the classes' __init__ arguments,
`trainer.*` Lightning's Trainer arguments (accelerator, devices, strategy, precision, max_steps ...),
`checkpoint.*` the ModelCheckpoint arguments (dirpath, every_n_train_steps ...), `fsdp.*` the options of
`trainer.strategy: fsdp` (see `fsdp_strategy`), `throughput.*` those of the throughput log (see
`audiollm.train.progress.TokenThroughput`). `--ckpt_path last` resumes; `--print_config` prints the
resolved configuration.
"""

from __future__ import annotations

import io
import math
import os
import sys
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins import TorchCheckpointIO
from lightning.pytorch.strategies import FSDPStrategy

from audiollm.files import atomic_write
from audiollm.model import Block
from audiollm.threads import set_threads
from audiollm.train.codec import CodecDataModule, CodecModule, ExportCodec
from audiollm.train.datamodule import AudioDataModule
from audiollm.train.module import ExportOnTrainEnd, FitError, LitAudioLM
from audiollm.train.progress import ProgressLog, TokenThroughput

# kind -> (LightningModule, LightningDataModule, callbacks added to the Trainer)
RECIPES = {
    "codec": (CodecModule, CodecDataModule, [ExportCodec, ProgressLog]),
    "lm": (LitAudioLM, AudioDataModule, [ExportOnTrainEnd, ProgressLog]),
}


def fsdp_strategy(
    activation_checkpointing: bool = False,
    sharding_strategy: str = "FULL_SHARD",
    cpu_offload: bool = False,
) -> FSDPStrategy:
    """Lightning's FSDPStrategy with one FSDP unit per transformer block (`audiollm.model.Block`).

    Args:
        activation_checkpointing: recompute each block's activations in the backward pass (less memory,
            about a third more compute).
        sharding_strategy: FULL_SHARD (parameters, gradients and optimiser state), SHARD_GRAD_OP,
            NO_SHARD or HYBRID_SHARD, as in torch.distributed.fsdp.ShardingStrategy.
        cpu_offload: keep parameters and gradients on the CPU between uses.

    Checkpoints hold the full (gathered) state, so a resumed run may use another number of devices and the
    exported model is the plain `AudioLanguageModel` that `from_pretrained` loads.
    """
    return FSDPStrategy(
        auto_wrap_policy={Block},
        activation_checkpointing_policy={Block} if activation_checkpointing else None,
        sharding_strategy=sharding_strategy,
        cpu_offload=cpu_offload,
        state_dict_type="full",
    )


class CheckedCheckpointIO(TorchCheckpointIO):
    """Writes checkpoints atomically and fails on any write error.

    Lightning's own atomic save swallows a PermissionError: a run into a read-only folder ended with exit 0
    and no checkpoint. Local paths are written here (temporary file, then rename); others go to Lightning.
    """

    def save_checkpoint(self, checkpoint: dict, path: str | Path, storage_options: Any = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        try:
            with atomic_write(path) as f:
                f.write(buffer.getbuffer())
        except OSError as e:
            raise FitError(f"could not write the checkpoint {path}: {e}") from e


class FitCLI(LightningCLI):
    """LightningCLI without subcommands, with `kind`, `ckpt_path`, `checkpoint.*`, `fsdp.*` and
    `throughput.*` in the config."""

    def __init__(self, kind: str, args: list[str]):
        self.kind = kind
        module, datamodule, callbacks = RECIPES[kind]
        super().__init__(
            module,
            datamodule,
            args=args,
            run=False,
            save_config_callback=None,
            parser_kwargs={"exit_on_error": False},  # fit_main prints the error in one line
            trainer_defaults={"callbacks": [cb() for cb in callbacks]},
        )

    def _instantiate_trainer(self, config: dict, callbacks: list):
        """Default logging: TensorBoard and CSV under the run's root (unless the config sets `logger`);
        `strategy: fsdp` built by `fsdp_strategy`; checkpoints written by `CheckedCheckpointIO`; the
        throughput log for the LM."""
        if config.get("logger") in (None, True):
            root = config.get("default_root_dir") or "."
            config["logger"] = [TensorBoardLogger(root, name="tensorboard"), CSVLogger(root, name="csv")]
        if config.get("strategy") == "fsdp":
            config["strategy"] = fsdp_strategy(**self.config_init["fsdp"].as_dict())
        plugins = config.get("plugins") or []
        config["plugins"] = [*(plugins if isinstance(plugins, list) else [plugins]), CheckedCheckpointIO()]
        if self.kind == "lm":
            callbacks = [*callbacks, self.config_init["throughput"]]
        return super()._instantiate_trainer(config, callbacks)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--kind", choices=sorted(RECIPES), default=self.kind, help="which recipe this is")
        parser.add_argument(
            "--ckpt_path", default=None, help="checkpoint to resume from ('last' for the latest)"
        )
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_function_arguments(fsdp_strategy, "fsdp")
        if self.kind == "codec":
            parser.link_arguments("model.codec.sample_rate", "data.sample_rate")
            parser.link_arguments("model.codec.channels", "data.channels")
            parser.link_arguments(
                ("model.codec.sample_rate", "model.codec.strides"), "data.frame_rate",
                compute_fn=lambda rate, strides: rate / math.prod(strides),
            )  # fmt: skip
        if self.kind == "lm":  # the token layout follows from the data's tokenizer and codec
            parser.add_class_arguments(TokenThroughput, "throughput")
            parser.link_arguments(
                "data.vocab", "model.vocab", compute_fn=lambda v: v.to_dict(), apply_on="instantiate"
            )


def config_kind(argv: list[str]) -> str:
    """The recipe kind named by `--kind` or by the `kind` field of the last `--config` YAML that has one."""
    kind = None
    for i, arg in enumerate(argv):
        name, _, value = arg.partition("=")
        value = value or (argv[i + 1] if i + 1 < len(argv) else "")
        if name in ("-c", "--config") and Path(value).is_file():
            loaded = yaml.safe_load(Path(value).read_text()) or {}
            kind = loaded.get("kind", kind) if isinstance(loaded, dict) else kind
        elif name == "--kind":
            kind = value
    if kind not in RECIPES:
        raise SystemExit(
            f"audiollm fit: the config's top-level 'kind' must be one of {sorted(RECIPES)}, got {kind!r}"
        )
    return kind


def readable_checkpoint(path: Path) -> str | None:
    """None if `path` loads as a checkpoint with torch.load(weights_only=True), else the reason it does not."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError ... for a bad file
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return None if isinstance(state, dict) and "state_dict" in state else "it holds no Lightning state_dict"


def resume_path(ckpt_path: str | None, dirpath: str | None) -> str | None:
    """The checkpoint file `--ckpt_path` names, checked before training starts.

    'last' is `<checkpoint.dirpath>/last.ckpt` when it exists (else Lightning's 'last': a fresh start).
    Refuses URLs (a downloaded checkpoint is not trusted) and files that do not load with
    weights_only=True, naming the newest readable checkpoint beside a bad one.
    """
    if ckpt_path is None:
        return None
    if "://" in ckpt_path:
        raise FitError(
            f"--ckpt_path {ckpt_path}: only local checkpoint files are read; download it and pass its path"
        )
    if ckpt_path == "last":
        last = Path(dirpath or ".") / "last.ckpt"
        if not last.is_file():
            return ckpt_path
        ckpt_path = str(last)
    path = Path(ckpt_path)
    if not path.is_file():
        raise FitError(f"--ckpt_path {path}: no such file")
    problem = readable_checkpoint(path)
    if problem is None:
        return ckpt_path
    others = sorted(
        (p for p in path.parent.glob("*.ckpt") if p != path), key=lambda p: p.stat().st_mtime, reverse=True
    )
    good = next((p for p in others if readable_checkpoint(p) is None), None)
    hint = f"; resume from {good} with --ckpt_path {good}" if good else "; no readable checkpoint beside it"
    raise FitError(f"{path} is not a readable checkpoint (truncated or empty?): {problem}{hint}")


def writable_folder(folder: Path) -> None:
    """Fail now, before the first step, if checkpoints cannot be written into `folder`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise FitError(f"checkpoint.dirpath {folder} is not writable: {e}") from e


def fit_main(argv: list[str]) -> int:
    """Parse `argv` (config files and overrides), build trainer/model/data, and train. Returns 0 on success,
    1 with a one-line error for a bad config, checkpoint or run (a NaN loss, a failed checkpoint write)."""
    # `audiollm fit` hands LightningCLI the arguments after "fit" on purpose; its warning about sys.argv is noise
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    set_threads()
    try:  # errors in the config, its files or the checkpoint to resume: one line, not a traceback
        cli = FitCLI(config_kind(argv), argv)
        ckpt = cli.trainer.checkpoint_callback
        dirpath = ckpt.dirpath if ckpt is not None else None
        if dirpath is not None and cli.trainer.is_global_zero:
            writable_folder(Path(dirpath))
        ckpt_path = resume_path(cli.config.ckpt_path, dirpath)
    except (FitError, ValueError, TypeError, OSError, ArgumentError) as e:
        print(
            "audiollm fit: error:", " ".join(str(e).split()), file=sys.stderr
        )  # one line, even jsonargparse's
        return 1
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path, weights_only=True)
    except FitError as e:
        print(f"audiollm fit: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(fit_main(sys.argv[1:]))
