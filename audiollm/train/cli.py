"""`audiollm fit --config recipes/NAME/config.yaml`: one command for every recipe, built on LightningCLI.

The YAML's top-level `kind` picks the (LightningModule, LightningDataModule) pair from `RECIPES`;
the rest of the YAML holds values only: `model.*` and `data.*` are the classes' __init__ arguments,
`trainer.*` Lightning's Trainer arguments (accelerator, devices, strategy, precision, max_steps ...),
`checkpoint.*` the ModelCheckpoint arguments (dirpath, every_n_train_steps ...). `--ckpt_path last`
resumes; `--print_config` prints the resolved configuration.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from audiollm.train.codec import CodecDataModule, CodecModule, ExportCodec
from audiollm.train.datamodule import AudioDataModule
from audiollm.train.module import ExportOnTrainEnd, LitAudioLM
from audiollm.train.progress import ProgressLog, set_threads

# kind -> (LightningModule, LightningDataModule, callbacks added to the Trainer)
RECIPES = {
    "codec": (CodecModule, CodecDataModule, [ExportCodec, ProgressLog]),
    "lm": (LitAudioLM, AudioDataModule, [ExportOnTrainEnd, ProgressLog]),
}


class FitCLI(LightningCLI):
    """LightningCLI without subcommands, with `kind`, `ckpt_path` and `checkpoint.*` in the config."""

    def __init__(self, kind: str, args: list[str]):
        self.kind = kind
        module, datamodule, callbacks = RECIPES[kind]
        super().__init__(
            module,
            datamodule,
            args=args,
            run=False,
            save_config_callback=None,
            trainer_defaults={"callbacks": [cb() for cb in callbacks]},
        )

    def _instantiate_trainer(self, config: dict, callbacks: list):
        """Default logging: TensorBoard and CSV under the run's root (unless the config sets `logger`)."""
        if config.get("logger") in (None, True):
            root = config.get("default_root_dir") or "."
            config["logger"] = [TensorBoardLogger(root, name="tensorboard"), CSVLogger(root, name="csv")]
        return super()._instantiate_trainer(config, callbacks)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--kind", choices=sorted(RECIPES), default=self.kind, help="which recipe this is")
        parser.add_argument(
            "--ckpt_path", default=None, help="checkpoint to resume from ('last' for the latest)"
        )
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        if self.kind == "codec":
            parser.link_arguments("model.codec.sample_rate", "data.sample_rate")
            parser.link_arguments("model.codec.channels", "data.channels")
        if self.kind == "lm":  # the token layout follows from the data's tokenizer and codec
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


def fit_main(argv: list[str]) -> int:
    """Parse `argv` (config files and overrides), build trainer/model/data, and train. Returns 0."""
    # `audiollm fit` hands LightningCLI the arguments after "fit" on purpose; its warning about sys.argv is noise
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    set_threads()
    cli = FitCLI(config_kind(argv), argv)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.config.ckpt_path)
    return 0


if __name__ == "__main__":
    sys.exit(fit_main(sys.argv[1:]))
