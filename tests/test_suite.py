"""Training suites end to end on the digits shards: same data order across sizes, log-spaced exports that
load, `audiollm batches` equal to what training received, resume in the same order, one-line errors."""

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from safetensors.torch import load_file

from audiollm.cli import main
from audiollm.train.suite import (
    batch_lines,
    example_digest,
    is_saved_step,
    resolve_sizes,
    run_suite,
    saved_steps,
)

SIZES = ["d64", "debug"]


def write_suite_config(tmp_path: Path, digits, name: str = "suite", **trainer) -> Path:
    tok, spm = digits
    config = {
        "kind": "lm",
        "seed_everything": 0,
        "model": {"preset": "debug", "lr": 3e-3, "warmup_steps": 2},
        "data": {
            "sources": [{"path": str(tok), "tasks": {"asr": 1.0, "tts": 1.0}}],
            "tokenizer": str(spm), "max_len": 96, "prompt_seconds": 0.5, "token_budget": 768,
            "valid_batches": 1, "num_workers": 0,
        },
        "trainer": {
            "accelerator": "cpu", "devices": 1, "precision": "32-true", "max_steps": 6, "log_every_n_steps": 1,
            "default_root_dir": str(tmp_path / name), "enable_progress_bar": False, "limit_val_batches": 0,
            **trainer,
        },
        "checkpoint": {"every_n_train_steps": 3, "save_top_k": -1},
    }  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Received(L.Callback):
    """What each training step of each run received: (run folder, global_step) -> [(text, audio) per micro-batch]."""

    def __init__(self):
        self.batches: dict[tuple[str, int], list] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        key = (Path(trainer.default_root_dir).name, trainer.global_step)
        self.batches.setdefault(key, []).append((batch["text"].clone(), batch["audio"].clone()))


class StopAt(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def fingerprints(received: Received, run: str) -> list[str]:
    return [
        example_digest(text, audio)
        for (name, _), micros in sorted(received.batches.items())
        if name == run
        for text, audio in micros
    ]


def matches(lines: list[dict], micros: list, pad: int) -> bool:
    """Lines of one step (one rank) describe exactly the micro-batches training received."""
    rows = [(text[b], audio[b]) for text, audio in micros for b in range(text.shape[0])]
    if len(rows) != len(lines):
        return False
    for line, (text, audio) in zip(lines, rows, strict=True):
        n = line["positions"]
        if example_digest(text[:n], audio[:n]) != line["digest"] or not (text[n:] == pad).all():
            return False
    return True


@pytest.fixture(scope="module")
def suite(tmp_path_factory, digits_tokenized):
    """Two sizes, 6 steps, saved every 4 after the powers of two: steps 0, 1, 2, 4 and the last, 6."""
    tmp = tmp_path_factory.mktemp("suite")
    config = write_suite_config(tmp, digits_tokenized)
    received = Received()
    root = run_suite(["--config", str(config)], SIZES, every=4, callbacks=[received])
    return config, root, received


def test_saved_steps_are_log_spaced_then_every():
    assert saved_steps(25, 10) == [0, 1, 2, 4, 8, 10, 20, 25]
    assert saved_steps(2048, 1000) == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 2048]
    with pytest.raises(ValueError, match="step must be >= 0"):
        is_saved_step(-1, 10)


def test_sizes_are_presets_or_named_variants():
    assert list(resolve_sizes()) == ["debug", "tiny", "small"]
    assert resolve_sizes(["tiny", "d64"])["d64"] == {
        "preset": "debug",
        "config": {"n_layer": 2, "n_head": 2, "d_model": 64},
    }
    with pytest.raises(ValueError, match="unknown size 'huge'; known: debug, tiny, small, base, d64, d128"):
        resolve_sizes(["huge"])


def test_every_size_sees_the_same_batches_and_its_steps_load(suite, encodec_24k_checkpoint, monkeypatch):
    from audiollm import AudioLM
    from audiollm.model import AudioLanguageModel

    _, root, received = suite
    assert len(fingerprints(received, "d64")) == 6
    assert fingerprints(received, "d64") == fingerprints(received, "debug")
    monkeypatch.setenv("AUDIOLLM_ENCODEC_CHECKPOINT", str(encodec_24k_checkpoint))
    for size, width in (("d64", 64), ("debug", 32)):
        steps = sorted(int(p.name) for p in (root / size / "steps").iterdir())
        assert steps == [0, 1, 2, 4, 6]
        assert AudioLanguageModel.from_pretrained(root / size / "steps" / "4").config.d_model == width
        assert (root / size / "config.yaml").is_file() and (
            root / size / "checkpoints" / "last.ckpt"
        ).is_file()
    lm = AudioLM.from_pretrained(root / "d64" / "steps" / "6")
    assert "asr" in lm.tasks
    first, last = (load_file(root / "d64" / "steps" / s / "model.safetensors") for s in ("0", "6"))
    assert any(not torch.equal(first[k], last[k]) for k in first)


def test_batches_prints_what_each_step_received(suite, capsys):
    config, _, received = suite
    for step in range(6):
        assert main(["batches", "--config", str(config), "--step", str(step)]) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert {line["task"] for line in lines} <= {"asr", "tts"} and all(line["id"] for line in lines)
        assert matches(lines, received.batches[("d64", step)], pad=_pad(config))


def test_batches_for_a_world_of_two_split_the_single_rank_order(suite):
    config, _, _ = suite
    one = [batch_lines(["--config", str(config)], s) for s in (2, 3)]
    two = [batch_lines(["--config", str(config)], 1, rank=r, world=2) for r in (0, 1)]
    assert [line["batch"] for line in two[0]] == [2] * len(two[0])
    strip = ("step", "rank")
    for a, b in zip(one, two, strict=True):
        assert [{k: v for k, v in x.items() if k not in strip} for x in a] == [
            {k: v for k, v in x.items() if k not in strip} for x in b
        ]


def test_batches_with_accumulation_match_training(tmp_path, digits_tokenized, capsys):
    config = write_suite_config(
        tmp_path, digits_tokenized, "accumulate", max_steps=2, accumulate_grad_batches=2
    )
    received = Received()
    run_suite(["--config", str(config)], sizes=["d64"], every=4, callbacks=[received])
    capsys.readouterr()
    for step in range(2):
        assert main(["batches", "--config", str(config), "--step", str(step), "--sizes", "d64"]) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [line["micro"] for line in lines].count(1) > 0 and all(line["size"] == "d64" for line in lines)
        assert matches(lines, received.batches[("d64", step)], pad=_pad(config))


def test_a_size_resumes_in_the_same_order(suite, tmp_path, digits_tokenized):
    _, straight_root, straight = suite
    config = write_suite_config(tmp_path, digits_tokenized, "resumed")
    first, second = Received(), Received()
    run_suite(["--config", str(config)], sizes=["debug"], every=4, callbacks=[first, StopAt(3)])
    root = run_suite(["--config", str(config)], sizes=["debug"], every=4, callbacks=[second])
    assert sorted(step for _, step in second.batches) == [3, 4, 5]
    assert fingerprints(first, "debug") + fingerprints(second, "debug") == fingerprints(straight, "debug")
    for step in ("4", "6"):
        a = load_file(straight_root / "debug" / "steps" / step / "model.safetensors")
        b = load_file(root / "debug" / "steps" / step / "model.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_kill_after_a_checkpoint_before_its_export_keeps_the_step(suite, tmp_path, digits_tokenized):
    """ModelCheckpoint writes step=2.ckpt before ExportSteps writes steps/2; a kill in between used to lose
    steps/2 for good, since the resumed run starts at step 3 (seen as a flaky
    `test_a_killed_suite_resumes_each_size`). The resumed run now exports it from the checkpoint."""
    import shutil

    _, straight_root, _ = suite
    config = write_suite_config(tmp_path, digits_tokenized, "killed")
    argv = ["--config", str(config), "--checkpoint.every_n_train_steps", "2"]
    root = run_suite(argv, sizes=["debug"], every=4, callbacks=[StopAt(2)])
    shutil.rmtree(root / "debug" / "steps" / "2")  # what the kill left: the checkpoint, no step folder
    run_suite(argv, sizes=["debug"], every=4)
    assert sorted(int(p.name) for p in (root / "debug" / "steps").iterdir()) == [0, 1, 2, 4, 6]
    a = load_file(straight_root / "debug" / "steps" / "2" / "model.safetensors")
    b = load_file(root / "debug" / "steps" / "2" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["suite", "--sizes", "huge"], "unknown size 'huge'"),
        (["batches", "--step", "-1"], "step must be >= 0, got -1"),
        (["sweep", "--sizes", "debug", "--lrs", "1e-3,3e-3"], "at least two sizes"),
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path, digits_tokenized, capsys, argv, message):
    config = write_suite_config(tmp_path, digits_tokenized)
    assert main([*argv, "--config", str(config)]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith(f"audiollm {argv[0]}: error:")


def _pad(config: Path) -> int:
    from audiollm.text import load_tokenizer
    from audiollm.vocab import DEFAULT_TASKS, Vocab

    data = yaml.safe_load(config.read_text())["data"]
    size = load_tokenizer(data["tokenizer"], "sentencepiece").vocab_size
    return Vocab(text_size=size, num_codebooks=2, codebook_size=1024, task_names=DEFAULT_TASKS).pad


def test_the_lr_fit_recovers_a_power_law():
    """Synthetic sweep rows: loss = (log lr - log lr*)^2 + c with lr* = 0.5 * params^-0.3."""
    from audiollm.train.sweep import fit_lr, predict_lr

    rows = []
    for size, params in (("s", 10**5), ("m", 10**6), ("l", 10**7)):
        best = 0.5 * params**-0.3
        for lr in (1e-3 * 2**i for i in range(8)):
            loss = 2.0 + (math.log(lr) - math.log(best)) ** 2
            rows.append(
                {"size": size, "params": params, "lr": lr, "mixture": "base", "task": "all", "loss": loss}
            )
            rows.append(
                {"size": size, "params": params, "lr": lr, "mixture": "base", "task": "asr", "loss": 9.0}
            )
    fit = fit_lr(rows)
    assert fit["slope"] == pytest.approx(-0.3, abs=1e-9)
    assert math.exp(fit["intercept"]) == pytest.approx(0.5, rel=1e-9)
    assert fit["sizes"]["m"]["best_lr"] == pytest.approx(0.5 * 1e6**-0.3, rel=1e-9)
    assert predict_lr(fit, 10**8) == pytest.approx(0.5 * 1e8**-0.3, rel=1e-9)
    with pytest.raises(ValueError, match="at least two sizes"):
        fit_lr([r for r in rows if r["size"] == "s"])


@pytest.mark.slow
def test_analyze_writes_curves_of_every_step(
    suite, digits_tokenized, encodec_24k_checkpoint, monkeypatch, tmp_path
):
    import csv

    _, root, _ = suite
    monkeypatch.setenv("AUDIOLLM_ENCODEC_CHECKPOINT", str(encodec_24k_checkpoint))
    manifest = digits_tokenized[0].parent / "manifest.jsonl"
    assert (
        main(["analyze", str(root), "--manifest", str(manifest), "--limit", "2", "--out", str(tmp_path)]) == 0
    )
    rows = list(csv.DictReader((tmp_path / "curves.csv").read_text().splitlines()))
    assert set(rows[0]) == {"size", "step", "task", "metric", "value"}
    got = {(r["size"], int(r["step"]), r["task"], r["metric"]) for r in rows}
    for size in ("d64", "debug"):
        for step in (0, 1, 2, 4, 6):
            assert {
                (size, step, "all", "loss"),
                (size, step, "asr", "wer"),
                (size, step, "tts", "loss"),
            } <= got
    assert rows[0]["size"] == "debug"  # the smallest size first
    assert (tmp_path / "curves.png").stat().st_size > 10_000


@pytest.mark.slow
def test_sweep_writes_the_grid_and_the_fit(tmp_path, digits_tokenized, capsys):
    import csv

    config = write_suite_config(tmp_path, digits_tokenized, max_steps=2)
    mixtures = json.dumps({"both": {"asr": 1, "tts": 1}, "asr": {"asr": 1}})
    argv = ["sweep", "--config", str(config), "--sizes", "d64,debug", "--lrs", "1e-3,1e-2"]
    argv += ["--mixtures", mixtures, "--predict", "tiny", "--out", str(tmp_path / "sweep")]
    argv += ["--data.valid_batches", "4"]  # a fit override: held-out batches of both tasks
    assert main(argv) == 0
    rows = list(csv.DictReader((tmp_path / "sweep" / "sweep.csv").read_text().splitlines()))
    assert len(rows) == 2 * 2 * 2 * 3  # mixtures x sizes x lrs x (all, asr, tts): both held-out tasks
    assert {r["mixture"] for r in rows} == {"both", "asr"}
    fit = json.loads((tmp_path / "sweep" / "lr_fit.json").read_text())
    assert set(fit["sizes"]) == {"d64", "debug"} and fit["predicted"]["tiny"]["lr"] > 0
    assert (tmp_path / "sweep" / "lr_fit.png").stat().st_size > 10_000
    capsys.readouterr()
    assert main(argv) == 0  # every point is scored: the rerun trains nothing
    assert "[sweep]" not in capsys.readouterr().out


@pytest.mark.slow
def test_a_killed_suite_resumes_each_size(tmp_path, digits_tokenized):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    config = write_suite_config(tmp_path, digits_tokenized, max_steps=30)
    cmd = [sys.executable, "-m", "audiollm.cli", "suite", "--config", str(config), "--sizes", "d64,debug"]
    cmd += ["--every", "8", "--checkpoint.every_n_train_steps", "2"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = tmp_path / "suite"
    deadline = time.time() + 300
    while time.time() < deadline and not list((root / "debug" / "checkpoints").glob("*.ckpt")):
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)  # while the second size trains
    proc.wait()
    done = (root / "d64" / "steps" / "30" / "model.safetensors").stat().st_mtime
    assert not (root / "debug" / "steps" / "30").exists()
    rerun = subprocess.run(cmd, env=env, cwd=REPO, check=True, capture_output=True, text=True).stdout
    assert "[suite] d64: finished" in rerun
    assert (root / "d64" / "steps" / "30" / "model.safetensors").stat().st_mtime == done  # untouched
    steps = sorted(int(p.name) for p in (root / "debug" / "steps").iterdir())
    assert steps == [0, 1, 2, 4, 8, 16, 24, 30]
    first = next(line for line in rerun.splitlines() if line.startswith("step "))
    assert int(first.split()[1].split("/")[0]) > 1, first  # debug went on from its checkpoint


def test_heldout_loss_of_one_batch_is_the_training_loss(suite):
    """`heldout_losses` weighs tokens as `LitAudioLM.compute_loss` does: on one batch, "all" is its loss."""
    from audiollm.model import AudioLanguageModel
    from audiollm.train.datamodule import AudioDataModule
    from audiollm.train.module import LitAudioLM
    from audiollm.train.suite import heldout_losses, valid_batches

    _, root, _ = suite
    config = yaml.safe_load((root / "debug" / "config.yaml").read_text())
    batch = valid_batches(AudioDataModule(**config["data"]), 1)[0]
    model = AudioLanguageModel.from_pretrained(root / "debug" / "steps" / "6")
    lit = LitAudioLM(vocab=model.config.vocab.to_dict(), init_from=str(root / "debug" / "steps" / "6"))
    lit.hparams.stop_weight = 10.0
    with torch.no_grad():
        expected = lit.eval().compute_loss(batch)
    got = heldout_losses(model, [batch], stop_weight=10.0)
    assert got["all"] == pytest.approx(float(expected["loss"]), rel=1e-5)
    for task in ("asr", "tts"):
        if f"loss_{task}" in expected:
            assert got[task] == pytest.approx(float(expected[f"loss_{task}"]), rel=1e-5)


def test_resume_point_takes_the_newest_step_checkpoint_when_last_is_missing(tmp_path):
    """A kill can land after a step's checkpoint is written and before last.ckpt: resuming from "last" would
    then start the size afresh (seen as a flaky `test_a_killed_suite_resumes_each_size`)."""
    import os

    from audiollm.train.suite import resume_point

    assert resume_point(tmp_path) is None
    for i, name in enumerate(["step=2.ckpt", "step=4.ckpt"]):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    assert resume_point(tmp_path) == str(tmp_path / "step=4.ckpt")
    (tmp_path / "last.ckpt").write_bytes(b"x")
    assert resume_point(tmp_path) == "last"


def test_a_resumed_suite_clears_the_step_folder_a_kill_interrupted(tmp_path):
    """A kill during a step's export leaves its temporary folder (`.N.tmp`); the resumed run removes it, so
    `<size>/steps/` holds only step folders (seen as a flaky `test_a_killed_suite_resumes_each_size`)."""
    from types import SimpleNamespace

    from audiollm.train.suite import ExportSteps

    (tmp_path / ".2.tmp").mkdir()
    (tmp_path / ".2.tmp" / "config.json").write_text("{}")
    (tmp_path / "1").mkdir()
    ExportSteps(tmp_path, every=8).on_train_start(SimpleNamespace(is_global_zero=True, global_step=3), None)
    assert [p.name for p in tmp_path.iterdir()] == ["1"]
