"""MM1-style recipe ablations: a small grid of sizes x peak learning rates (x task mixtures) trained from one
config, every point scored on the same held-out batches, and the best learning rate fitted against size:

    log(best lr) = intercept + slope * log(parameters)

Layout under `out` (default `<trainer.default_root_dir>/sweep`):

    runs/<size>_lr<lr>_<mixture>/   each point's `audiollm fit` run, and its result.json once scored
    sweep.csv                       size, params, lr, mixture, task, loss (held-out; task "all": every task)
    lr_fit.json                     the fit: slope, intercept, each size's best and predicted lr, --predict sizes
    lr_fit.png                      held-out loss against lr per size; best lr against parameters, with the fit

A size's best lr is the vertex of a parabola in log lr through its best grid point and the two beside it
(the best grid point itself when that lies at an edge of the grid). Held-out batches come from the config's
own sources, whatever the mixture trained on, so every mixture is scored on the same examples. A killed
sweep resumes: scored points are read back, an unscored one continues from its last checkpoint.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from audiollm.data.mixture import Source
from audiollm.eval import plots
from audiollm.tasks import TASKS
from audiollm.train.suite import (
    DEFAULT_ROOT,
    ON_CPU,
    build_cli,
    check_lm,
    count_params,
    figure,
    fit_setting,
    heldout_losses,
    resolve_sizes,
    resume_point,
    size_overrides,
    valid_batches,
)

BASE = "base"  # the mixture of the config as it is


def parse_mixtures(text: str | None, sources: Sequence[Source]) -> dict[str, list[dict] | None]:
    """name -> `data.sources` of each mixture in `text` (JSON, or a JSON file, of {name: {task: weight}});
    without `text`, the config's own sources ({"base": None}).

    A mixture replaces every source's task weights: a source keeps the tasks the mixture names with a
    weight > 0 (among those it served), at the mixture's weights; a source left with none is dropped.
    """
    if not text:
        return {BASE: None}
    loaded = json.loads(Path(text).read_text() if Path(text).is_file() else text)
    if not isinstance(loaded, dict) or not loaded:
        raise ValueError('--mixtures: give a JSON object {"name": {"task": weight, ...}, ...}')
    served = {t for s in sources for t in s.tasks}
    out: dict[str, list[dict] | None] = {}
    for name, weights in loaded.items():
        if not re.fullmatch(r"[\w.-]+", name) or not isinstance(weights, dict):
            raise ValueError(f"--mixtures: {name!r} must be a plain name mapped to {{task: weight}}")
        for task, weight in weights.items():
            if task not in TASKS or task not in served:
                raise ValueError(
                    f"mixture {name!r}: no source serves task {task!r} (they serve {', '.join(sorted(served))})"
                )
            if not float(weight) >= 0:
                raise ValueError(f"mixture {name!r}: weight of {task} must be >= 0, got {weight}")
        kept = []
        for s in sources:
            tasks = {t: float(w) for t, w in weights.items() if t in s.tasks and float(w) > 0}
            if tasks:
                kept.append({"path": s.path, "tasks": tasks})
        if not kept:
            raise ValueError(f"mixture {name!r} keeps no task of the config's sources")
        out[name] = kept
    return out


def best_lr(points: Sequence[tuple[float, float]]) -> float:
    """The learning rate of least loss among (lr, loss) points: the vertex of the parabola in log lr through
    the best point and its neighbours, or the best point itself at an edge of the grid."""
    lrs, losses = zip(*sorted(points), strict=True)
    i = int(np.argmin(losses))
    if 0 < i < len(lrs) - 1:
        x = np.log(lrs[i - 1 : i + 2])
        a, b, _ = np.polyfit(x, losses[i - 1 : i + 2], 2)
        if a > 0:
            return float(np.exp(np.clip(-b / (2 * a), x[0], x[2])))
    return float(lrs[i])


def fit_lr(rows: Sequence[dict], mixture: str | None = None) -> dict:
    """Fit log(best lr) linearly in log(params) over the sizes of `rows` (sweep.csv rows; task "all" of
    `mixture`, default every row): slope, intercept, and per size its params, best and predicted lr."""
    sizes: dict[str, dict] = {}
    for r in rows:
        if r["task"] == "all" and (mixture is None or r["mixture"] == mixture):
            entry = sizes.setdefault(r["size"], {"params": int(r["params"]), "points": []})
            entry["points"].append((float(r["lr"]), float(r["loss"])))
    if len(sizes) < 2:
        raise ValueError(f"a sweep needs at least two sizes to fit the learning rate, got {len(sizes)}")
    params = np.array([s["params"] for s in sizes.values()], dtype=np.float64)
    if len(set(params)) < 2:
        raise ValueError("every size has the same number of parameters: there is nothing to fit against")
    best = np.array([best_lr(s["points"]) for s in sizes.values()])
    grids = [sorted(lr for lr, _ in s["points"]) for s in sizes.values()]
    edges = [bool(b in (g[0], g[-1])) for g, b in zip(grids, best, strict=True)]  # widen the grid there
    slope, intercept = np.polyfit(np.log(params), np.log(best), 1)
    fit = {
        "rule": "log(lr) = intercept + slope * log(params)",
        "slope": float(slope),
        "intercept": float(intercept),
    }
    fit["sizes"] = {
        name: {
            "params": s["params"],
            "best_lr": float(b),
            "predicted_lr": predict_lr(fit, s["params"]),
            "at_edge": edge,
        }
        for (name, s), b, edge in zip(sizes.items(), best, edges, strict=True)
    }
    return fit


def predict_lr(fit: dict, params: int) -> float:
    """The fitted rule's learning rate for a model of `params` parameters."""
    return float(math.exp(fit["intercept"] + fit["slope"] * math.log(params)))


def run_sweep(
    argv: list[str],
    sizes: Sequence[str],
    lrs: Sequence[float],
    mixtures: str | None = None,
    out: str | Path | None = None,
    predict: Sequence[str] = (),
) -> Path:
    """Train and score every (mixture, size, lr) point, write sweep.csv, lr_fit.json and lr_fit.png (the
    fit over the first mixture) into `out`; returns `out`."""
    if len(sizes) < 2:
        raise ValueError(
            f"a sweep needs at least two sizes to fit the learning rate, got {len(sizes)}: {','.join(sizes)}"
        )
    if not lrs or not all(lr > 0 for lr in lrs):
        raise ValueError(f"--lrs: give learning rates > 0, got {list(lrs)}")
    specs = resolve_sizes(sizes)
    extra = resolve_sizes(predict) if predict else {}
    check_lm(argv)
    out = Path(out or Path(str(fit_setting(argv, "trainer.default_root_dir") or DEFAULT_ROOT)) / "sweep")
    judge = build_cli([*argv, *ON_CPU])  # the config as it is: its sources give the held-out batches
    mixes = parse_mixtures(mixtures, judge.datamodule.sources)
    held = valid_batches(judge.datamodule)
    if not held:
        raise ValueError("a sweep scores held-out loss: the config's sources need records with split 'valid'")
    stop_weight = float(judge.model.hparams.stop_weight)
    vocab = judge.datamodule.vocab
    rows = []
    for mixture, sources in mixes.items():
        for name, spec in specs.items():
            for lr in lrs:
                result = _point(argv, out, name, spec, lr, mixture, sources, held, stop_weight)
                params = count_params(spec, vocab)
                rows += [{"size": name, "params": params, "lr": lr, "mixture": mixture, "task": t, "loss": v}
                         for t, v in result["losses"].items()]  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["size", "params", "lr", "mixture", "task", "loss"])
        writer.writeheader()
        writer.writerows(rows)
    fit = fit_lr(rows, next(iter(mixes)))
    fit["mixture"] = next(iter(mixes))
    fit["predicted"] = {
        n: {"params": (p := count_params(s, vocab)), "lr": predict_lr(fit, p)} for n, s in extra.items()
    }
    (out / "lr_fit.json").write_text(json.dumps(fit, indent=2) + "\n")
    plot_lr_fit(rows, fit, out / "lr_fit.png")
    print(summary(rows, fit))
    return out


def _point(argv, out, name, spec, lr, mixture, sources, held, stop_weight) -> dict:
    """Train one grid point (or resume it) and score it; its result.json makes a rerun skip it."""
    run = out / "runs" / f"{name}_lr{lr:g}_{mixture}"
    result = run / "result.json"
    if result.is_file():
        return json.loads(result.read_text())
    overrides = [*size_overrides(spec), "--model.lr", str(lr), "--trainer.default_root_dir", str(run),
                 "--checkpoint.dirpath", str(run / "checkpoints")]  # fmt: skip
    if sources is not None:
        overrides += ["--data.sources", json.dumps(sources)]
    print(f"[sweep] {name} lr {lr:g} mixture {mixture} -> {run}", flush=True)
    cli = build_cli([*argv, *overrides])
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=resume_point(run / "checkpoints"))
    scored = {
        "size": name,
        "lr": lr,
        "mixture": mixture,
        "losses": heldout_losses(cli.model.model, held, stop_weight),
    }
    run.mkdir(parents=True, exist_ok=True)
    result.write_text(json.dumps(scored, indent=2) + "\n")
    return scored


def summary(rows: Sequence[dict], fit: dict) -> str:
    """The fit per size, and each task's held-out loss per mixture and size (at that size's best grid lr)."""
    from audiollm.eval.report import format_table

    lines = [f"lr fit ({fit['rule']}): slope {fit['slope']:.3f}, intercept {fit['intercept']:.3f}"]
    lines.append(format_table([{"size": k, **v} for k, v in fit["sizes"].items()]))
    lines += [
        f"note: {k}'s best lr is at an edge of the grid: widen --lrs"
        for k, v in fit["sizes"].items()
        if v["at_edge"]
    ]
    lines += [
        f"predicted for {k}: lr {v['lr']:.3g} ({v['params']:,} parameters)"
        for k, v in fit.get("predicted", {}).items()
    ]
    table = []
    for mixture in dict.fromkeys(r["mixture"] for r in rows):
        for size in dict.fromkeys(r["size"] for r in rows):
            mine = [r for r in rows if (r["mixture"], r["size"]) == (mixture, size)]
            lr = min((r for r in mine if r["task"] == "all"), key=lambda r: r["loss"])["lr"]
            table.append(
                {"mixture": mixture, "size": size, "lr": lr}
                | {r["task"]: r["loss"] for r in mine if r["lr"] == lr}
            )
    return "\n".join(
        [*lines, "held-out loss per mixture (at each size's best grid lr):", format_table(table)]
    )


def plot_lr_fit(rows: Sequence[dict], fit: dict, path: str | Path) -> Path:
    """Left: held-out loss against lr per size (log x), each size's best lr marked. Right: best lr against
    parameters (log-log) with the fitted line and any predicted sizes."""
    fig = figure(11, 4)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, entry in fit["sizes"].items():
        points = sorted((r["lr"], r["loss"]) for r in rows if r["size"] == name and r["task"] == "all"
                        and r["mixture"] == fit.get("mixture", r["mixture"]))  # fmt: skip
        line = left.plot(
            *zip(*points, strict=True), marker="o", label=f"{name} ({entry['params'] / 1e6:.2g} M)"
        )[0]
        left.axvline(entry["best_lr"], color=line.get_color(), linestyle=":", alpha=0.7)
    left.set_xscale("log")
    left.set(xlabel="peak learning rate", ylabel="held-out loss", title="loss against learning rate")
    params = [e["params"] for e in fit["sizes"].values()] + [
        p["params"] for p in fit.get("predicted", {}).values()
    ]
    span = np.geomspace(min(params) / 1.5, max(params) * 1.5, 50)
    right.plot(span, [predict_lr(fit, p) for p in span], color="gray", label=f"fit: slope {fit['slope']:.2f}")
    right.scatter(
        [e["params"] for e in fit["sizes"].values()],
        [e["best_lr"] for e in fit["sizes"].values()],
        label="best lr",
    )
    for name, p in fit.get("predicted", {}).items():
        right.scatter([p["params"]], [p["lr"]], marker="*", s=120, label=f"predicted: {name}")
    shown = [e["best_lr"] for e in fit["sizes"].values()] + [
        p["lr"] for p in fit.get("predicted", {}).values()
    ]
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_ylim(min(shown) / 3, max(shown) * 3)
    right.set(xlabel="parameters", ylabel="best learning rate", title="best learning rate against size")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return plots.save(fig, path)
