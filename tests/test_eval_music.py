import numpy as np
import pytest

from audiollm import AudioLM, audio
from audiollm.data.manifest import Record
from audiollm.eval.audio_stats import STATS, SoundJudge, audio_stats, evaluate_generation

SR = 16000


def sine(freq: float = 1000.0, seconds: float = 2.0, amplitude: float = 0.5, sample_rate: int = SR):
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def lm(digits_model, encodec_24k_checkpoint):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUDIOLLM_ENCODEC_CHECKPOINT", str(encodec_24k_checkpoint))
        yield AudioLM.from_pretrained(digits_model)


def test_sine_statistics():
    stats = audio_stats(sine(1000.0, amplitude=0.5), SR)
    assert stats["duration_s"] == 2.0
    assert stats["peak_dbfs"] == pytest.approx(-6.02, abs=0.01)
    assert stats["rms_dbfs"] == pytest.approx(-9.03, abs=0.01)  # a sine's RMS is peak / sqrt(2)
    assert stats["silence_ratio"] == 0 and stats["clipped_ratio"] == 0
    assert stats["centroid_hz"] == pytest.approx(1000, abs=1)
    assert stats["bandwidth_hz"] < 30 and stats["rolloff_hz"] == pytest.approx(1000, abs=SR / 1024)
    assert stats["flatness"] < 1e-6


def test_loudness_is_bs1770_calibrated():
    # BS.1770: a full-scale 997 Hz sine in one channel reads -3.01 LKFS; a second channel adds 3.01 LU.
    full = sine(997.0, seconds=3.0, amplitude=1.0, sample_rate=48000)
    assert audio_stats(full, 48000)["loudness_lufs"] == pytest.approx(-3.01, abs=0.1)
    assert audio_stats(0.1 * full, 48000)["loudness_lufs"] == pytest.approx(-23.01, abs=0.1)
    assert audio_stats(np.stack([full, full]), 48000)["loudness_lufs"] == pytest.approx(0.0, abs=0.1)
    assert audio_stats(full[:9600], 48000)["loudness_lufs"] is None, "shorter than a 400 ms block"


def test_silence_is_all_silent_and_undefined_elsewhere():
    stats = audio_stats(np.zeros(SR, np.float32), SR)
    assert stats["silence_ratio"] == 1.0 and stats["clipped_ratio"] == 0.0
    undefined = ("loudness_lufs", "peak_dbfs", "rms_dbfs", "centroid_hz", "bandwidth_hz", "rolloff_hz")
    assert all(stats[k] is None for k in (*undefined, "flatness"))
    half = audio_stats(np.concatenate([sine(seconds=1.0), np.zeros(SR, np.float32)]), SR)
    assert half["silence_ratio"] == pytest.approx(0.5)
    assert half["centroid_hz"] == pytest.approx(1000, abs=2), "silent frames do not enter the spectrum"


def test_clipping_counts_samples_at_full_scale():
    x = np.clip(sine(997.0, amplitude=2.0), -1, 1)
    expected = np.mean(np.abs(2 * np.sin(2 * np.pi * 997 * np.arange(2 * SR) / SR)) >= 0.999)
    assert audio_stats(x, SR)["clipped_ratio"] == pytest.approx(expected, abs=1e-4)
    assert expected == pytest.approx(2 / 3, abs=0.01)  # |2 sin| >= 1 for two thirds of a period
    assert audio_stats(sine(amplitude=0.9), SR)["clipped_ratio"] == 0


def test_white_noise_is_flat_and_centred():
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 2 * SR).astype(np.float32)
    stats = audio_stats(x, SR)
    assert stats["flatness"] == pytest.approx(np.exp(-np.euler_gamma), abs=0.03)  # 0.56 for white noise
    assert stats["centroid_hz"] == pytest.approx(SR / 4, rel=0.02)
    assert stats["rolloff_hz"] == pytest.approx(0.85 * SR / 2, rel=0.02)


def test_evaluate_generation_reports_generated_beside_reference(lm, shared_data, tmp_path):
    folder = shared_data / "fsdd_spoken_digits" / "recordings"
    records = [
        Record(id=n, audio=str(folder / f"{n}.wav"), caption="a voice says two")
        for n in ("2_theo_5", "2_jackson_6")
    ]
    report = evaluate_generation(lm, records, "music", seed=0)
    generated, reference = report.summary
    assert (generated["system"], reference["system"]) == ("generated", "reference")
    assert set(STATS) <= set(generated)
    by_hand = [audio_stats(*audio.load(r.audio)) for r in records]
    assert reference["duration_s"] == pytest.approx(np.mean([s["duration_s"] for s in by_hand]))
    assert reference["centroid_hz"] == pytest.approx(np.mean([s["centroid_hz"] for s in by_hand]))
    wav, sr = lm.generate_music("a voice says two", duration=by_hand[0]["duration_s"], seed=0)
    assert report.items[0]["generated"] == audio_stats(wav, sr)
    assert generated["duration_s"] <= reference["duration_s"] + 1 / lm.codec.frame_rate
    assert generated["rtf"] > 0 and reference["rtf"] is None
    assert any("no embedding metric" in n for n in report.notes)
    music_only = type(lm)(lm.model, lm.tokenizer, lm.codec, lm.config | {"tasks": ["music"]})
    with pytest.raises(ValueError, match="not trained for sfx"):
        evaluate_generation(music_only, records, "sfx")


def clicks(bpm: float, seconds: float = 8.0) -> np.ndarray:
    """A click (10 ms of a 2 kHz burst) on every beat."""
    x = np.zeros(int(seconds * SR), np.float32)
    burst = sine(2000.0, seconds=0.01)
    for start in np.arange(0, seconds - 0.01, 60 / bpm):
        x[int(start * SR) : int(start * SR) + len(burst)] += burst
    return x


def test_tempo_follows_the_beat():
    for bpm in (80, 140):
        assert audio_stats(clicks(bpm), SR)["tempo_bpm"] == pytest.approx(bpm, rel=0.05)
    assert audio_stats(np.zeros(SR, np.float32), SR)["tempo_bpm"] is None


def labelled(tmp_path, n: int = 3) -> list[Record]:
    """n tones (different pitches) and n noises on disk, labelled."""
    rng, records = np.random.default_rng(0), []
    for i in range(n):
        for label, wav in (("tone", sine(300.0 + 150 * i)), ("noise", rng.uniform(-0.3, 0.3, 2 * SR))):
            path = tmp_path / f"{label}{i}.wav"
            audio.save(path, np.asarray(wav, np.float32)[None], SR)
            records.append(
                Record(id=f"{label}{i}", audio=str(path), caption=f"a {label}", extra={"label": label})
            )
    return records


def test_sound_judge_tells_the_classes_apart(tmp_path):
    judge = SoundJudge(labelled(tmp_path))
    assert judge.labels == ["noise", "tone"]
    assert judge.classify(sine(525.0), SR) == "tone"
    assert judge.classify(np.random.default_rng(1).uniform(-0.2, 0.2, SR).astype(np.float32), SR) == "noise"
    with pytest.raises(ValueError, match="2 classes"):
        SoundJudge([r for r in labelled(tmp_path) if r.extra["label"] == "tone"])


def test_evaluate_generation_judges_classes_at_a_fixed_length(lm, tmp_path):
    records = labelled(tmp_path, n=2)
    report = evaluate_generation(lm, records[:2], "sfx", seconds=1.0, judge=SoundJudge(records))
    generated, reference = report.summary
    assert generated["duration_s"] <= 1.0 + 1 / lm.codec.frame_rate
    assert reference["class_acc"] == 1.0  # the judge knows its own training clips
    judged = [i["judged"] == i["label"] for i in report.items]
    assert generated["class_acc"] == pytest.approx(np.mean(judged))
    assert any("nearest-centroid" in n for n in report.notes)
