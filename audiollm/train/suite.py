"""Pythia-style training suites: several sizes trained on the same data in the same order, their weights
saved at log-spaced steps, and the tools that rebuild the batch any step saw and score every checkpoint.

A suite runs any `audiollm fit` config of kind lm once per size. A size (`SIZES`: a preset and overrides
of its fields) sets `model.preset` and `model.config`, replacing the config's own. Each size trains under
the config's `trainer.default_root_dir`:

    <size>/config.yaml     the size's resolved `audiollm fit` config (what `analyze` reads)
    <size>/checkpoints/    Lightning checkpoints: a size that was killed resumes from its last one
    <size>/steps/<N>/      the weights after N optimiser steps, loadable by `AudioLM.from_pretrained`
    <size>/model/          the final export, as `audiollm fit` writes it

"Step N" is the optimiser step that takes `trainer.global_step` from N to N + 1. On W ranks with A
micro-batches per step, rank r's micro-batch a of step N is global batch (N * A + a) * W + r of the data
order (`audiollm.data.sampler`), a function of the data config and its seed only, never of the size.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import shutil
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
import yaml

from audiollm.eval import plots
from audiollm.files import atomic_path
from audiollm.model import PRESETS, AudioLanguageModel, ModelConfig, lm_loss
from audiollm.tasks import TASKS
from audiollm.threads import set_threads
from audiollm.train.cli import FitCLI
from audiollm.train.datamodule import AudioDataModule
from audiollm.train.module import export
from audiollm.vocab import Vocab

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DEFAULT_EVERY = 1000  # Pythia's spacing after step 512
DEFAULT_ROOT = "runs/suite"
ON_CPU = [  # a trainer that only builds data and models (`batches`, the sweep's evaluator)
    "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.num_nodes=1", "--trainer.strategy=auto",
    "--trainer.logger=false",
]  # fmt: skip


# ---- configs and sizes ---------------------------------------------------------------------------------
SIZES: dict[str, dict] = {
    **{name: {"preset": name} for name in PRESETS},
    # between debug and tiny, for suites on a few CPU cores
    "d64": {"preset": "debug", "config": {"n_layer": 2, "n_head": 2, "d_model": 64}},
    "d128": {"preset": "debug", "config": {"n_layer": 3, "n_head": 4, "d_model": 128}},
}
"""Suite sizes: a preset of `audiollm.model.PRESETS` and overrides of its fields."""
DEFAULT_SIZES = ("debug", "tiny", "small")
_UNSET = object()


def fit_setting(argv: Sequence[str], dotted: str, default: object = None) -> object:
    """A setting as `audiollm fit` resolves `argv`: the last of the `--config` YAMLs that set it and the
    `--dotted` overrides, in order (e.g. "trainer.default_root_dir")."""
    value = default
    for i, arg in enumerate(argv):
        name, eq, text = arg.partition("=")
        if not eq and i + 1 < len(argv):
            text = argv[i + 1]
        if name == f"--{dotted}" and (eq or i + 1 < len(argv)):
            value = yaml.safe_load(text)
        elif name in ("-c", "--config") and Path(text).is_file():
            node = yaml.safe_load(Path(text).read_text())
            for key in dotted.split("."):
                node = node.get(key, _UNSET) if isinstance(node, dict) else _UNSET
            value = value if node is _UNSET else node
    return value


def names(text: str | Sequence[str] | None) -> list[str] | None:
    """'a,b' -> ['a', 'b'] (None stays None)."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    return [n.strip() for n in items if n.strip()]


def resolve_sizes(chosen: Sequence[str] | None = None) -> dict[str, dict]:
    """name -> {preset, config} of the `chosen` sizes (default: `DEFAULT_SIZES`), each one of `SIZES`."""
    chosen = list(chosen or DEFAULT_SIZES)
    for name in chosen:
        if name not in SIZES:
            raise ValueError(f"unknown size {name!r}; known: {', '.join(SIZES)}")
    if len(set(chosen)) < len(chosen):
        raise ValueError(f"a size is named twice in {','.join(chosen)}")
    return {name: SIZES[name] for name in chosen}


def check_lm(argv: Sequence[str]) -> None:
    """Raise ValueError unless the configs in `argv` are of kind lm."""
    kind = fit_setting(argv, "kind", "lm")
    if kind != "lm":
        raise ValueError(f"suites and sweeps train language models (kind: lm), not kind: {kind}")


def size_overrides(spec: dict) -> list[str]:
    """The `audiollm fit` overrides that make a run this size."""
    return ["--model.preset", spec["preset"], "--model.config", json.dumps(spec.get("config") or {})]


def count_params(spec: dict, vocab: Vocab) -> int:
    """Parameters of a size's model over `vocab` (built on the meta device: no memory, no time)."""
    with torch.device("meta"):
        model = AudioLanguageModel(
            ModelConfig(vocab=vocab, **{**PRESETS[spec["preset"]], **(spec.get("config") or {})})
        )
    return model.num_params()


def resume_point(checkpoints: str | Path) -> str | None:
    """What `trainer.fit(ckpt_path=...)` takes to resume from `checkpoints`: "last" when `last.ckpt` is there;
    else the newest step checkpoint (a kill can land after a step's checkpoint and before `last.ckpt`:
    "last" would then start afresh); None when there is none (a fresh start)."""
    folder = Path(checkpoints)
    if any(folder.glob("last*.ckpt")):
        return "last"
    steps = sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    return str(steps[-1]) if steps else None


def build_cli(argv: list[str]) -> FitCLI:
    """FitCLI (kind lm) over `argv`: trainer, model and data built, nothing run."""
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    set_threads()
    return FitCLI("lm", argv)


# ---- the suite -----------------------------------------------------------------------------------------
def is_saved_step(step: int, every: int) -> bool:
    """Whether a suite keeps the weights after `step` steps: 0, the powers of two below `every`, and the
    multiples of `every` (Pythia: 0, 1, 2, 4, ..., 512, 1000, 2000, ...)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return step == 0 or step % every == 0 or (step < every and step & (step - 1) == 0)


def saved_steps(max_steps: int, every: int) -> list[int]:
    """The steps a run of `max_steps` keeps: the log-spaced ones and the last."""
    steps = [s for s in range(max_steps + 1) if is_saved_step(s, every)]
    return steps if steps[-1] == max_steps else [*steps, max_steps]


class ExportSteps(L.Callback):
    """Export the weights into `<out>/<N>/` at each saved step N (`is_saved_step`) and at `max_steps`.

    A step folder is written beside its place and renamed into it, so a kill never leaves half of one.
    """

    def __init__(self, out: str | Path, every: int):
        self.out, self.every, self.done = Path(out), every, -1

    def _export(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if step == self.done or not trainer.is_global_zero:
            return
        self.done = step
        dm = trainer.datamodule
        with atomic_path(self.out / str(step)) as tmp:
            export(pl_module.model, tmp, dm.tokenizer, dm.codec, dm.options, dm.tasks)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:  # a step folder a kill interrupted (resumed runs write it again)
            for stale in self.out.glob(".*.tmp"):
                shutil.rmtree(stale, ignore_errors=True)
        # Step 0, or the saved step a resumed run starts from when a kill fell between that step's checkpoint
        # (ModelCheckpoint runs before this callback) and its export: the weights now are that step's.
        step = trainer.global_step
        if is_saved_step(step, self.every) and not (self.out / str(step) / "config.json").is_file():
            self._export(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if is_saved_step(trainer.global_step, self.every):
            self._export(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == trainer.max_steps:
            self._export(trainer, pl_module)


def run_suite(
    argv: list[str],
    sizes: Sequence[str] | None = None,
    every: int | None = None,
    callbacks: Sequence[L.Callback] = (),
) -> Path:
    """Train each size in turn on the same data order, resuming any that has a checkpoint; returns the root.

    argv: `audiollm fit` arguments (--config files and overrides); sizes: names in `SIZES` (default:
    `DEFAULT_SIZES`); every: the saved steps' spacing after the powers of two below it (default 1000).
    """
    specs = resolve_sizes(sizes)
    every = DEFAULT_EVERY if every is None else every
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    check_lm(argv)
    root = Path(str(fit_setting(argv, "trainer.default_root_dir") or DEFAULT_ROOT))
    for name, spec in specs.items():
        run = root / name
        overrides = ["--trainer.default_root_dir", str(run), "--checkpoint.dirpath", str(run / "checkpoints")]
        cli = build_cli([*argv, *size_overrides(spec), *overrides, "--checkpoint.save_last=true"])
        last = run / "steps" / str(cli.trainer.max_steps)
        if (last / "config.json").is_file() and (run / "model" / "config.json").is_file():
            print(f"[suite] {name}: finished ({last} exists), skipped", flush=True)
            continue
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.yaml").write_text(cli.parser.dump(cli.config, skip_none=False))
        cli.trainer.callbacks.extend([ExportSteps(run / "steps", every), *callbacks])
        params = cli.model.model.num_params() / 1e6
        print(
            f"[suite] {name}: {params:.2f} M parameters, {cli.trainer.max_steps} steps -> {run}", flush=True
        )
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=resume_point(run / "checkpoints"))
    return root


# ---- what a step saw -----------------------------------------------------------------------------------
def example_digest(text: torch.Tensor, audio: torch.Tensor) -> str:
    """SHA-1 of an example's ids: text (S,) and audio (S, K) int64, as built or as a batch row's first S."""
    data = (
        text.to(torch.int64).contiguous().numpy().tobytes()
        + audio.to(torch.int64).contiguous().numpy().tobytes()
    )
    return hashlib.sha1(data).hexdigest()


def step_examples(
    dm: AudioDataModule, step: int, accumulate: int = 1, world: int = 1, rank: int | None = None
) -> list[dict]:
    """What optimiser step `step` trained on (every rank's, or `rank`'s): one dict per example with its
    rank, micro-batch, global batch, row, record id, source, task, positions, item seed and digest."""
    from audiollm.data.sampler import BatchStream

    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if world < 1 or accumulate < 1:
        raise ValueError(f"world size and accumulation must be >= 1, got {world} and {accumulate}")
    if rank is not None and not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside a world of {world} (ranks 0..{world - 1})")
    dm.setup("fit")
    data, lines = dm.train_data, []
    stream = BatchStream(data, dm.plan)  # rank 0 of a world of 1 reads the global order itself
    for r in range(world) if rank is None else [rank]:
        for micro in range(accumulate):
            g = (step * accumulate + micro) * world + r
            for row, (s, record, seed) in enumerate(stream.global_batch(g).tolist()):
                st = data.streams[s]
                ex = data.example(s, record, seed)
                lines.append({
                    "step": step, "rank": r, "micro": micro, "batch": g, "row": row,
                    "id": data.records[st.source][record]["id"], "source": dm.sources[st.source].path,
                    "task": st.task, "positions": len(ex), "seed": seed, "digest": example_digest(ex.text, ex.audio),
                })  # fmt: skip
    return lines


def world_size(devices: object, num_nodes: object = 1) -> int:
    """Ranks of a trainer with these `devices` (an int, a list, '0,1', 'auto') on `num_nodes` nodes."""
    if isinstance(devices, list | tuple):
        n = len(devices)
    elif isinstance(devices, str) and "," in devices:
        n = len([d for d in devices.split(",") if d.strip()])
    else:
        try:
            n = int(devices)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            n = 1  # "auto": one device on a CPU-only machine
        n = max(n, 1)
    return n * int(num_nodes or 1)  # type: ignore[arg-type]


def batch_lines(
    argv: list[str],
    step: int,
    sizes: Sequence[str] | None = None,
    rank: int | None = None,
    world: int | None = None,
) -> list[dict]:
    """`step_examples` of the config in `argv` (world size: `world`, else the config's devices x nodes),
    for each of `sizes` (lines then carry "size"), or once for the config as it is."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    specs = resolve_sizes(sizes) if sizes else {None: None}
    check_lm(argv)
    world = world or world_size(
        fit_setting(argv, "trainer.devices", 1), fit_setting(argv, "trainer.num_nodes", 1)
    )
    if rank is not None and not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside a world of {world} (ranks 0..{world - 1})")
    lines = []
    for name, spec in specs.items():
        cli = build_cli([*argv, *(size_overrides(spec) if spec else []), *ON_CPU])
        found = step_examples(cli.datamodule, step, cli.trainer.accumulate_grad_batches, world, rank)
        lines += [({"size": name} if name else {}) | line for line in found]
    return lines


# ---- scoring the checkpoints ---------------------------------------------------------------------------
@torch.no_grad()
def heldout_losses(
    model: AudioLanguageModel, batches: Sequence[dict[str, torch.Tensor]], stop_weight: float = 1.0
) -> dict[str, float]:
    """Loss over `batches` (as training weighs it), over all examples ("all") and per task: the mean over
    every scored token and code of the batches together."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, float] = defaultdict(float)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        text_logits, audio_logits = model(batch["text"], batch["audio"], batch["is_audio"])
        stops = batch["is_audio"] & (batch["text_target"] == model.config.vocab.eos)  # (B, S)
        weight = torch.where(stops, stop_weight, 1.0)
        tensors = (text_logits, audio_logits, batch["text_target"], batch["audio_target"])
        tensors += (batch["text_mask"], batch["audio_mask"], weight)
        groups = {"all": torch.ones_like(batch["task"], dtype=torch.bool)}  # (B,) rows of each group
        groups |= {task: batch["task"] == i for i, task in enumerate(TASKS)}
        for name, rows in groups.items():
            if rows.any():
                sub = [x[rows] for x in tensors]
                text_mask, audio_mask, text_weight = sub[4:]
                n = float(text_weight[text_mask].sum() + audio_mask.sum())  # what lm_loss averages over
                sums[name] += float(lm_loss(*sub)["loss"]) * n
                counts[name] += n
    model.train(was_training)
    return {k: sums[k] / counts[k] for k in sums if counts[k] > 0}


def valid_batches(dm: AudioDataModule, n: int | None = None) -> list[dict[str, torch.Tensor]]:
    """The first `n` (default: data.valid_batches, else 8) batches of the data module's valid split, as
    validation reads them on one rank; none when its sources have no valid split."""
    from audiollm.data.sampler import BatchStream

    dm.setup("fit")
    if dm.valid_data is None:
        return []
    stream = BatchStream(dm.valid_data, dm.plan)
    return [stream.batch(i) for i in range(n or dm.valid_batches or 8)]


def analyze(
    suite_dir: str | Path,
    manifest: str | Path | None,
    out: str | Path,
    limit: int = 20,
    batches: int | None = None,
    device: str = "cpu",
) -> Path:
    """Score every saved step of every size of a suite: per-task held-out loss on the valid split and,
    with a manifest, ASR WER/CER on its first `limit` records. Writes `out/curves.csv` (size, step, task,
    metric, value) and `out/curves.png`, after each size; returns the CSV's path."""
    suite_dir = Path(suite_dir)
    runs = sorted(d for d in suite_dir.glob("*/steps") if (d.parent / "config.yaml").is_file())
    if not runs:
        raise ValueError(
            f"{suite_dir}: no <size>/steps/ folders with a config.yaml; run `audiollm suite` first"
        )
    records = None
    if manifest:
        from audiollm.eval.suite import select

        records = select(manifest, "text", limit)[0]
    rows, params = [], {}
    for steps in runs:
        size = steps.parent.name
        config = yaml.safe_load((steps.parent / "config.yaml").read_text())
        held = valid_batches(AudioDataModule(**config["data"]), batches)
        stop_weight = float((config.get("model") or {}).get("stop_weight") or 1.0)
        for step_dir in sorted((d for d in steps.iterdir() if d.name.isdigit()), key=lambda d: int(d.name)):
            step = int(step_dir.name)
            model = AudioLanguageModel.from_pretrained(step_dir, device=device)
            params[size] = model.num_params()
            scored = [
                {"size": size, "step": step, "task": task, "metric": "loss", "value": value}
                for task, value in heldout_losses(model, held, stop_weight).items()
            ]
            if records is not None:
                scored += _asr_rows(size, step, step_dir, records, device)
            rows += scored
            print(f"[analyze] {size} step {step}: " + ", ".join(
                f"{r['task']} {r['metric']} {r['value']:.3f}" for r in scored), flush=True)  # fmt: skip
        path = write_curves(rows, params, out)  # after each size: a stopped run keeps what it scored
    return path


def write_curves(rows: list[dict], params: dict[str, int], out: str | Path) -> Path:
    """Write `out/curves.csv` (rows sorted by size, smallest first, then step) and `out/curves.png`."""
    rows = sorted(rows, key=lambda r: (params[r["size"]], r["size"], r["step"], r["task"], r["metric"]))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "curves.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, ["size", "step", "task", "metric", "value"])
        writer.writeheader()
        writer.writerows(rows)
    plot_curves(rows, params, out / "curves.png")
    return path


def _asr_rows(size: str, step: int, step_dir: Path, records: list, device: str) -> list[dict]:
    from audiollm.api import AudioLM
    from audiollm.eval.asr import evaluate_asr

    lm = AudioLM.from_pretrained(step_dir, device=device)
    if "asr" not in lm.tasks:
        return []
    summary = evaluate_asr(lm, records).summary[0]
    return [
        {"size": size, "step": step, "task": "asr", "metric": m, "value": float(summary[m])}
        for m in ("wer", "cer")
    ]


def figure(width: float, height: float) -> Figure:
    """A matplotlib Figure drawn off screen (Agg), without pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def plot_curves(rows: list[dict], params: dict[str, int], path: str | Path) -> Path:
    """One panel per (task, metric): the value against step (log x, step 0 at the origin), a line per size."""
    order = {"loss": 0, "wer": 1, "cer": 2}
    panels = sorted(
        {(r["task"], r["metric"]) for r in rows}, key=lambda p: (order.get(p[1], 3), p[0] != "all", p)
    )
    if not panels:
        raise ValueError("no curves to draw: the suite has no scored checkpoints")
    from matplotlib.ticker import FuncFormatter

    cols = min(3, len(panels))
    fig = figure(4.5 * cols, 3.2 * math.ceil(len(panels) / cols))
    for i, (task, metric) in enumerate(panels):
        ax = fig.add_subplot(math.ceil(len(panels) / cols), cols, i + 1)
        for size in sorted(params, key=params.get):
            points = sorted(
                (r["step"], r["value"])
                for r in rows
                if (r["size"], r["task"], r["metric"]) == (size, task, metric)
            )
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, marker="o", markersize=3, label=f"{size} ({params[size] / 1e6:.2g} M)")
        ax.set_xscale("symlog", linthresh=1)  # step 0 at the origin, then log-spaced
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set(title=f"{task} {metric}", xlabel="step", ylabel=metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return plots.save(fig, path)
