"""FSDP through `audiollm fit` (`trainer.strategy: fsdp`): two ranks train as one process does on the same
global batch, and the exported model is the plain one `AudioLM.from_pretrained` loads."""

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import FSDPStrategy

from audiollm.model import AudioLanguageModel, Block
from audiollm.train.cli import fit_main, fsdp_strategy
from tests.test_train_lm import _fit_process, write_config

ROWS = 4  # batches each run records


class RecordLosses(L.Callback):
    """Append '<global batch> <loss>' for every training batch to <root>/losses_rank<r>.txt; rank r of w
    reads global batch i * w + r as its i-th (`audiollm.data.sampler.BatchStream`)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = float(outputs["loss"]) * trainer.accumulate_grad_batches  # Lightning divides it
        g = batch_idx * trainer.world_size + trainer.global_rank
        with open(Path(trainer.default_root_dir) / f"losses_rank{trainer.global_rank}.txt", "a") as f:
            f.write(f"{g} {loss!r}\n")


def recorded(root: Path) -> dict[int, float]:
    out = {}
    for file in root.glob("losses_rank*.txt"):
        for line in file.read_text().split("\n"):
            if line:
                g, loss = line.split()
                out[int(g)] = float(loss)
    return out


def two_process_run(tmp_path: Path, digits, accelerator: str, strategy: str) -> Path:
    """Two processes, one batch each per step, 2 optimiser steps; returns the run's root."""
    config = write_config(
        tmp_path, digits, strategy, max_steps=ROWS // 2, devices=2, strategy=strategy, accelerator=accelerator,
        val_check_interval=1000,
    )  # fmt: skip
    proc = _fit_process(config, "--trainer.callbacks+=tests.test_fsdp.RecordLosses")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    return tmp_path / strategy


def one_process_run(tmp_path: Path, digits) -> Path:
    """The same global batches (two per step, accumulated) in one process."""
    config = write_config(
        tmp_path, digits, "single", max_steps=ROWS // 2, accumulate_grad_batches=2, val_check_interval=1000
    )
    assert fit_main(["--config", str(config), "--trainer.callbacks+=tests.test_fsdp.RecordLosses"]) == 0
    return tmp_path / "single"


def check_same_training(parallel: Path, single: Path, tolerance: float = 1e-5) -> None:
    a, b = recorded(parallel), recorded(single)
    assert sorted(a) == sorted(b) == list(range(ROWS))
    for g in range(ROWS):
        assert a[g] == pytest.approx(b[g], rel=tolerance, abs=tolerance), (g, a, b)
    wa = AudioLanguageModel.from_pretrained(parallel / "model").state_dict()
    wb = AudioLanguageModel.from_pretrained(single / "model").state_dict()
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=10 * tolerance, atol=tolerance)


def test_fsdp_strategy_wraps_each_block():
    strategy = fsdp_strategy(activation_checkpointing=True)
    assert isinstance(strategy, FSDPStrategy) and strategy._state_dict_type == "full"
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {Block}
    assert strategy._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes == {Block}
    assert not fsdp_strategy()._activation_checkpointing_kwargs


def test_recipe_fsdp_reaches_lightnings_strategy(tmp_path, digits_tokenized, capsys):
    """`strategy: fsdp` in a config builds `fsdp_strategy`; on a CPU Lightning refuses it, in one line."""
    config = write_config(tmp_path, digits_tokenized, "cpu_fsdp", strategy="fsdp")
    assert fit_main(["--config", str(config)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "The strategy `fsdp` requires a GPU accelerator" in err


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_as_one(tmp_path, digits_tokenized, encodec_24k_checkpoint, speech_file, monkeypatch):  # fmt: skip
    """FSDP's path on a CPU: the export gathers the state through the strategy, the optimiser groups come
    from the modules; two DDP ranks give one process's losses and weights."""
    parallel = two_process_run(tmp_path, digits_tokenized, "cpu", "ddp")
    check_same_training(parallel, one_process_run(tmp_path, digits_tokenized))
    transcribe_export(parallel, encodec_24k_checkpoint, speech_file, monkeypatch)


@pytest.mark.slow
@pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason="Lightning's FSDPStrategy needs CUDA devices (2 here)"
)
def test_fsdp_two_gpus_train_as_one(tmp_path, digits_tokenized, encodec_24k_checkpoint, speech_file, monkeypatch):  # fmt: skip
    parallel = two_process_run(tmp_path, digits_tokenized, "gpu", "fsdp")
    check_same_training(parallel, one_process_run(tmp_path, digits_tokenized), tolerance=1e-3)
    transcribe_export(parallel, encodec_24k_checkpoint, speech_file, monkeypatch)


def transcribe_export(root: Path, encodec_checkpoint: Path, recording: Path, monkeypatch) -> None:
    """The export loads through the public API and transcribes a recording."""
    from audiollm import AudioLM

    monkeypatch.setenv("AUDIOLLM_ENCODEC_CHECKPOINT", str(encodec_checkpoint))
    text = AudioLM.from_pretrained(root / "model").transcribe(recording)
    assert isinstance(text, str)
