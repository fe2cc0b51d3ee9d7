import json

import numpy as np
import pytest

from audiollm import audio
from audiollm.cli import main
from audiollm.data.augment import speed_perturb, speed_rate
from audiollm.data.manifest import Record, read_manifest, write_jsonl
from tests.conftest import write_tone


def peak_hz(wav, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(wav[0].numpy()))
    return float(np.fft.rfftfreq(wav.shape[-1], 1 / sr)[spectrum.argmax()])


def test_a_faster_copy_is_shorter_and_higher_and_a_slower_one_the_reverse(tmp_path):
    tone = write_tone(tmp_path / "a.wav", seconds=2.0, sample_rate=8000, freq=400.0)
    rec = Record(id="a", audio=str(tone), text="ah", speaker="s", start=0.5, duration=1.0, extra={"take": 3})
    made, rejects = speed_perturb([rec], [0.9, 1.1], tmp_path / "out")
    assert rejects == [] and [r.id for r in made] == ["a-sp0.9", "a-sp1.1"]
    for r, factor in zip(made, (0.9, 1.1), strict=True):
        wav, sr = audio.load(r.audio)
        applied = 8000 / speed_rate(8000, factor)  # the factor after rounding the rate (8900 Hz: 0.899)
        assert sr == 8000 and r.duration == pytest.approx(1.0 / applied, abs=1e-3)  # the 1 s segment only
        assert peak_hz(wav, sr) == pytest.approx(400.0 * applied, rel=0.01)
        assert (r.text, r.speaker, r.start, r.extra) == ("ah", "s", 0.0, {"take": 3, "speed": factor})


def test_cli_writes_the_manifest_and_names_unreadable_clips(tmp_path, capsys):
    good = write_tone(tmp_path / "good.wav")
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    rows = [
        {"id": "good", "audio": str(good), "text": "one"},
        {"id": "bad", "audio": str(tmp_path / "bad.wav")},
    ]
    manifest = write_jsonl(tmp_path / "train.jsonl", rows)
    assert main(["augment", str(manifest), "--speeds", "1.2", "--out", str(tmp_path / "sp")]) == 0
    assert "1 records at speeds [1.2]; 1 clips unreadable" in capsys.readouterr().out
    (made,) = read_manifest(tmp_path / "sp" / "train.jsonl")
    assert made.id == "good-sp1.2" and made.duration == pytest.approx(1 / 1.2, abs=1e-2)
    (reject,) = [json.loads(line) for line in (tmp_path / "sp" / "rejects.jsonl").read_text().splitlines()]
    assert reject["id"] == "bad" and reject["audio"].endswith("bad.wav") and reject["reason"]
    with pytest.raises(ValueError, match=r"speed factors must be in \[0.5, 2\] and not 1"):
        speed_perturb([made], [1.0], tmp_path / "x")
    assert main(["augment", str(manifest), "--speeds", "3", "--out", str(tmp_path / "y")]) == 1
