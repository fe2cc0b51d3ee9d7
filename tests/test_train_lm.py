"""The LM recipe end to end through `audiollm fit`: real Trainer, real shards of real recordings."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from safetensors.torch import load_file

from audiollm.model import AudioLanguageModel
from audiollm.train.cli import FitCLI, fit_main
from tests.conftest import REPO


def write_config(tmp_path: Path, digits, name="run", **trainer) -> Path:
    tok, spm = digits
    root = tmp_path / name
    config = {
        "kind": "lm",
        "seed_everything": 0,
        "model": {"preset": "debug", "lr": 3e-3, "warmup_steps": 5},
        "data": {
            "sources": [{"path": str(tok), "tasks": {"asr": 1.0, "tts": 1.0}}],
            "tokenizer": str(spm),
            "max_len": 96,
            "prompt_seconds": 0.5,
            "token_budget": 768,
            "valid_batches": 1,
            "num_workers": 0,
        },
        "trainer": {
            "accelerator": "cpu", "devices": 1, "precision": "32-true", "max_steps": 6, "log_every_n_steps": 1,
            "default_root_dir": str(root), "enable_progress_bar": False, "val_check_interval": 3,
            "check_val_every_n_epoch": None, **trainer,
        },
        "checkpoint": {"dirpath": str(root / "checkpoints"), "every_n_train_steps": 3, "save_last": True,
                       "save_top_k": -1},
    }  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def losses(root: Path) -> dict[int, float]:
    out = {}
    for version in sorted((root / "csv").iterdir()):
        for row in csv.DictReader((version / "metrics.csv").read_text().splitlines()):
            if row.get("train/loss"):
                out[int(row["step"])] = float(row["train/loss"])
    return out


class StopAt(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def test_resume_is_exact(tmp_path, digits_tokenized):
    straight = write_config(tmp_path, digits_tokenized, "straight")
    assert fit_main(["--config", str(straight)]) == 0

    interrupted = write_config(tmp_path, digits_tokenized, "resumed")
    cli = FitCLI("lm", ["--config", str(interrupted)])
    cli.trainer.callbacks.append(StopAt(3))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert (tmp_path / "resumed" / "checkpoints" / "last.ckpt").is_file()
    assert fit_main(["--config", str(interrupted), "--ckpt_path", "last"]) == 0

    a, b = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(a) == sorted(b) == list(range(6))
    assert [a[s] for s in range(6)] == [b[s] for s in range(6)]
    wa = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    wb = load_file(tmp_path / "resumed" / "model" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


class SlowSteps(L.Callback):
    """Each training step takes at least `seconds`; records the learning rate after every step."""

    def __init__(self, seconds: float):
        self.seconds, self.lrs = seconds, []

    def on_train_batch_end(self, trainer, *args):
        time.sleep(self.seconds)
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_the_cosine_ends_when_max_time_stops_training_first(tmp_path, digits_tokenized):
    config = write_config(tmp_path, digits_tokenized, max_steps=10_000, val_check_interval=10_000)
    cli = FitCLI("lm", ["--config", str(config), "--trainer.max_time", "00:00:00:06"])
    slow = SlowSteps(0.3)
    cli.trainer.callbacks.append(slow)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    peak, floor = 3e-3, 3e-3 * cli.model.hparams.min_lr_ratio
    assert 5 < len(slow.lrs) < 100  # stopped by time, far before max_steps
    assert max(slow.lrs) > 0.5 * peak  # warmup reached the peak ...
    assert slow.lrs[-1] < floor + 0.1 * (peak - floor)  # ... and the cosine was near its end at the stop


@pytest.mark.slow
def test_loss_falls_and_export_loads(tmp_path, digits_tokenized):
    config = write_config(tmp_path, digits_tokenized, "long", max_steps=60, val_check_interval=30)
    assert fit_main(["--config", str(config), "--model.lr", "0.01"]) == 0
    curve = losses(tmp_path / "long")
    first, last = sum(curve[s] for s in range(3)) / 3, sum(curve[s] for s in range(57, 60)) / 3
    assert last < 0.6 * first, f"loss fell only from {first:.3f} to {last:.3f}"
    model = AudioLanguageModel.from_pretrained(tmp_path / "long" / "model")
    assert model.config.n_layer == 2
    config_json = (tmp_path / "long" / "model" / "config.json").read_text()
    assert '"pattern": "delay"' in config_json and '"asr"' in config_json


def test_bf16_mixed_runs_on_cpu(tmp_path, digits_tokenized):
    config = write_config(tmp_path, digits_tokenized, "bf16", max_steps=2, precision="bf16-mixed")
    assert fit_main(["--config", str(config)]) == 0
    assert all(torch.isfinite(torch.tensor(v)) for v in losses(tmp_path / "bf16").values())


def _fit_process(config: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "audiollm.cli", "fit", "--config", str(config), *extra]
    return subprocess.Popen(
        cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path, digits_tokenized):
    config = write_config(tmp_path, digits_tokenized, "ddp", max_steps=3, devices=2, strategy="ddp")
    proc = _fit_process(config, "--trainer.callbacks+=tests.train_helpers.RecordBatches")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    seen = [set((tmp_path / "ddp" / f"batches_rank{r}.txt").read_text().split()) for r in range(2)]
    assert len(seen[0]) == len(seen[1]) == 3 and not seen[0] & seen[1]
    AudioLanguageModel.from_pretrained(tmp_path / "ddp" / "model")


@pytest.mark.slow
def test_kill_while_checkpointing_keeps_a_loadable_checkpoint(tmp_path, digits_tokenized):
    config = write_config(tmp_path, digits_tokenized, "kill", max_steps=400, val_check_interval=1000)
    ckpts = tmp_path / "kill" / "checkpoints"
    proc = _fit_process(config, "--checkpoint.every_n_train_steps", "1", "--checkpoint.save_top_k", "1")
    deadline = time.time() + 300
    while time.time() < deadline and len(list(ckpts.glob("*.ckpt"))) < 2:
        time.sleep(0.2)
    time.sleep(1.5)  # checkpoints are written every step: the kill lands in or near a write
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    cli = FitCLI("lm", ["--config", str(config), "--ckpt_path", "last"])
    start = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    cli.trainer.callbacks.append(StopAt(start + 2))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path="last")
    assert cli.trainer.global_step == start + 2


def test_fit_starts_from_a_converted_pythia(tmp_path, digits_tokenized):
    """init_from a `audiollm convert gpt-neox` directory, with its tokenizer: the trunk starts from it."""
    from audiollm.cli import main
    from tests.test_convert import save_tiny_neox

    save_tiny_neox(tmp_path / "pythia")
    converted = tmp_path / "converted"
    assert (
        main(
            ["convert", "gpt-neox", str(tmp_path / "pythia"), "--out", str(converted), "--num-codebooks", "2"]
        )
        == 0
    )
    config = write_config(tmp_path, digits_tokenized, "pythia", max_steps=2)
    args = ["--config", str(config), "--model.init_from", str(converted), "--data.tokenizer", str(converted)]
    assert fit_main([*args, "--data.tokenizer_kind", "hf"]) == 0
    before = load_file(converted / "model.safetensors")
    after = load_file(tmp_path / "pythia" / "model" / "model.safetensors")
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert moved and all(torch.allclose(before[k], after[k], atol=0.05) for k in before)


class PoisonAt(L.Callback):
    """Set one weight to NaN after optimiser step 2, as a diverging run does."""

    def on_train_batch_end(self, trainer, pl_module, *args):
        if trainer.global_step == 2:
            with torch.no_grad():
                pl_module.model.text_head.weight[0, 0] = float("nan")


def test_nan_loss_stops_with_an_error_and_exports_nothing(tmp_path, digits_tokenized, capsys):
    config = write_config(tmp_path, digits_tokenized, "nan", val_check_interval=1000)
    assert fit_main(["--config", str(config), "--trainer.callbacks+=tests.test_train_lm.PoisonAt"]) == 1
    err = capsys.readouterr().err
    assert "loss is not finite at step 2" in err and not (tmp_path / "nan" / "model").exists()


def test_truncated_last_checkpoint_names_the_good_one(tmp_path, digits_tokenized, capsys):
    config = write_config(tmp_path, digits_tokenized, "trunc", max_steps=3, val_check_interval=1000)
    assert fit_main(["--config", str(config)]) == 0
    ckpts = tmp_path / "trunc" / "checkpoints"
    good = ckpts / "epoch=0-step=3.ckpt"
    last = ckpts / "last.ckpt"
    for damaged in (last.read_bytes()[: last.stat().st_size // 2], b""):
        last.write_bytes(damaged)
        capsys.readouterr()
        assert fit_main(["--config", str(config), "--ckpt_path", "last"]) == 1
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"{last} is not a readable checkpoint" in err
        assert f"--ckpt_path {good}" in err


def test_unwritable_checkpoint_folder_fails_before_training(tmp_path, digits_tokenized, capsys):
    """Root ignores file modes: there the folder is sysfs's /sys/kernel, which nobody may write into."""
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o500)
    if os.geteuid() == 0:
        folder = Path("/sys/kernel")
        if not folder.is_dir() or _can_create(folder):
            pytest.skip("no folder here that this (root) process cannot write")
    config = write_config(tmp_path, digits_tokenized, "ro", max_steps=3, val_check_interval=1000)
    assert fit_main(["--config", str(config), "--checkpoint.dirpath", str(folder)]) == 1
    err = capsys.readouterr().err
    assert f"checkpoint.dirpath {folder} is not writable" in err
    assert not (tmp_path / "ro" / "model").exists()


def _can_create(folder: Path) -> bool:
    try:
        (folder / ".probe").write_bytes(b"")
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


def test_checkpoint_write_error_is_raised(tmp_path):
    """Lightning's own save swallows a PermissionError; ours fails and names the file."""
    from audiollm.train.cli import CheckedCheckpointIO
    from audiollm.train.module import FitError

    folder = Path("/sys/kernel") if os.geteuid() == 0 else tmp_path / "readonly"
    if folder != Path("/sys/kernel"):
        folder.mkdir()
        folder.chmod(0o500)
    if _can_create(folder):
        pytest.skip(f"{folder} is writable here")
    with pytest.raises(FitError, match=f"could not write the checkpoint {folder / 'x.ckpt'}"):
        CheckedCheckpointIO().save_checkpoint({"state_dict": {}}, folder / "x.ckpt")


class _Payload:
    def __reduce__(self):  # what a crafted checkpoint does when unpickled: run code
        return (Path.touch, (Path(os.environ["H14_MARKER"]),))


def test_remote_checkpoint_is_refused(tmp_path, digits_tokenized, capsys, monkeypatch):
    """A checkpoint served over HTTP (a crafted pickle here) is never downloaded and unpickled."""
    import functools
    import http.server
    import threading

    marker = tmp_path / "code_ran"
    monkeypatch.setenv("H14_MARKER", str(marker))
    (tmp_path / "www").mkdir()
    torch.save({"state_dict": _Payload()}, tmp_path / "www" / "evil.ckpt")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/evil.ckpt"
    config = write_config(tmp_path, digits_tokenized, "remote", max_steps=1, val_check_interval=1000)
    try:
        code = fit_main(["--config", str(config), "--ckpt_path", url])
    except Exception:  # before the fix: the download was unpickled, then failed as a checkpoint
        code = None
    finally:
        server.shutdown()
    assert not marker.exists(), "the downloaded checkpoint ran code"
    assert code == 1 and "only local checkpoint files are read" in capsys.readouterr().err


@pytest.mark.parametrize(
    "override, problem",
    [
        (["--model.preset", "huge"], "unknown preset 'huge'"),
        (["--data.tokenizer", "/nonexistent/spm"], "/nonexistent/spm"),
        (["--trainer.max_steps", "abc"], 'Parser key "trainer.max_steps": Expected a'),
        (["--model.nonexistent", "3"], "unrecognized arguments: --model.nonexistent 3"),
    ],
)
def test_config_errors_are_one_line(tmp_path, digits_tokenized, capsys, override, problem):
    config = write_config(tmp_path, digits_tokenized, "bad")
    assert fit_main(["--config", str(config), *override]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("audiollm fit: error:") and problem in err and "\n" not in err


def test_throughput_and_mfu_are_logged(tmp_path, digits_tokenized, capsys):
    """Lightning's ThroughputMonitor logs tokens/s and, given a peak, MFU; the progress lines show them."""
    config = write_config(tmp_path, digits_tokenized, "tput", max_steps=5, val_check_interval=1000)
    args = ["--config", str(config), "--throughput.window", "2", "--throughput.peak_flops", "1e12"]
    assert fit_main(args) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert "tokens/s" in lines[-1] and "MFU" in lines[-1]
    metrics = (next((tmp_path / "tput" / "csv").iterdir()) / "metrics.csv").read_text().splitlines()
    rows = [r for r in csv.DictReader(metrics) if r.get("train/device/mfu")]
    assert len(rows) >= 3
    for r in rows:
        assert float(r["train/device/items_per_sec"]) > 0
        mfu, flops = float(r["train/device/mfu"]), float(r["train/device/flops_per_sec"])
        assert mfu == pytest.approx(flops / 1e12)


def test_flops_per_token_counts_every_matrix_product():
    from audiollm.model import PRESETS, ModelConfig
    from audiollm.train.module import LitAudioLM, flops_per_token
    from audiollm.vocab import Vocab

    vocab = Vocab(text_size=64, num_codebooks=2, codebook_size=16)
    lit = LitAudioLM(vocab=vocab.to_dict(), preset="debug")
    config = ModelConfig(vocab=vocab, **PRESETS["debug"])
    d, L, V, KC = config.d_model, config.n_layer, vocab.text_vocab_size, 2 * vocab.audio_card
    per_block = 4 * d * d + 3 * d * config.ff_dim  # q, k, v, out; SwiGLU's gate, up, down
    assert lit.matmul_params == L * per_block + d * V + d * KC
    assert flops_per_token(config, lit.matmul_params, 96) == 6 * lit.matmul_params + 12 * L * d * 96
