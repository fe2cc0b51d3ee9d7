import torch

from audiollm.eval.plots import loss_curves, read_curves, spectrograms


def test_loss_curves_read_a_lightning_csv_and_draw_it(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,step,train/loss,valid/loss\n0,9,4.0,\n0,19,3.5,\n0,19,,3.7\n0,29,3.0,\n")
    curves = read_curves(csv, ("train/loss", "valid/loss"))
    assert curves == {"train/loss": [(9, 4.0), (19, 3.5), (29, 3.0)], "valid/loss": [(19, 3.7)]}
    png = loss_curves(csv, tmp_path / "out" / "loss.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_spectrograms_draw_one_panel_per_clip(tmp_path):
    t = torch.arange(16000) / 16000
    clips = {
        "tone": (torch.sin(2 * torch.pi * 440 * t), 16000),
        "noise (numpy)": (0.1 * torch.randn(1, 8000).numpy(), 8000),
        "empty generation": (torch.zeros(0).numpy(), 16000),
    }
    png = spectrograms(clips, tmp_path / "s.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
