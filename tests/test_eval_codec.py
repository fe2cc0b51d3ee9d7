import math
import shutil

import pytest
import torch

from audiollm import audio
from audiollm.codecs import bitrate
from audiollm.codecs.native import PRESETS, NativeCodec, NativeCodecConfig
from audiollm.eval.codec import (
    codebook_perplexity,
    evaluate,
    evaluate_codec,
    identity_round_trip,
    log_mel_distance,
    opus_round_trip,
    pitch_agreement,
    si_snr,
    stoi,
)

SR = 16000


def speechlike(seconds: float = 2.0, seed: int = 0) -> torch.Tensor:
    """Noise with a 4 Hz syllable-rate envelope and a few harmonics: (N,) float32."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    voiced = sum(torch.sin(2 * math.pi * f * t) / (i + 1) for i, f in enumerate((140, 280, 420, 700, 1200)))
    carrier = voiced + 0.3 * torch.randn(t.shape, generator=g)
    envelope = 0.5 * (1 + torch.sin(2 * math.pi * 4 * t)) ** 2
    return (0.2 * envelope * carrier).float()


def test_si_snr_is_high_for_identity_and_scale_invariant():
    x = speechlike()
    assert si_snr(x, x) > 100
    assert si_snr(x, 0.3 * x) > 100


def test_si_snr_matches_the_noise_level():
    x = speechlike()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    noise = noise / noise.norm() * x.norm() / 10  # 20 dB below the signal
    assert si_snr(x, x + noise) == pytest.approx(20.0, abs=0.5)
    assert si_snr(x, x + 10 * noise) < si_snr(x, x + noise)


def test_stoi_and_log_mel_of_identical_and_degraded_signals():
    x = speechlike(3.0)
    noisy = x + 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    assert stoi(x, x, SR) > 0.99
    assert stoi(x, noisy, SR) < stoi(x, x, SR) - 0.1
    assert log_mel_distance(x, x, SR) == 0
    assert log_mel_distance(x, noisy, SR) > 0.5


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg with libopus")
def test_opus_round_trip_keeps_the_length_and_reports_its_bitrate():
    x = speechlike(2.0)
    decoded, kbps = opus_round_trip(6, SR)(x)
    assert decoded.shape == x.shape
    assert 3 < kbps < 9
    assert stoi(x, decoded, SR) > 0.5


def test_evaluate_codec_reports_every_metric(tmp_path):
    torch.manual_seed(0)
    codec = NativeCodec(NativeCodecConfig(**PRESETS["tiny"])).eval()
    codec.init_codebooks([torch.randn(2, 1, 3200)])
    files = [audio.save(tmp_path / f"{i}.wav", speechlike(1.0, seed=i), SR) for i in range(2)]
    result = evaluate_codec(codec, files)
    assert set(result) == {"log_mel_distance", "stoi", "si_snr", "kbps", "f0_error", "voicing", "files"}
    assert result["files"] == 2 and result["kbps"] == bitrate(codec) / 1000
    assert all(math.isfinite(result[k]) for k in ("log_mel_distance", "stoi", "si_snr", "kbps", "voicing"))
    perplexity = codebook_perplexity(codec, files)
    assert len(perplexity) == 4 and all(1 <= p <= codec.codebook_size for p in perplexity)


def test_codebook_perplexity_counts_the_codes_used(tmp_path):
    class Fixed:  # a stand-in codec whose codebook 0 alternates two codes and codebook 1 always emits one
        sample_rate, channels, num_codebooks, codebook_size = SR, 1, 2, 8

        def encode(self, wav):
            T = wav.shape[-1] // 160
            return torch.stack([torch.arange(T) % 2, torch.zeros(T, dtype=torch.long)])[None]

    files = [audio.save(tmp_path / "a.wav", speechlike(1.0), SR)]
    assert codebook_perplexity(Fixed(), files) == pytest.approx([2.0, 1.0])


def test_pitch_agreement_sees_a_shifted_pitch():
    t = torch.arange(SR) / SR
    tone = lambda f0: sum(torch.sin(2 * math.pi * f0 * k * t) / k for k in range(1, 6)).float() * 0.2  # noqa: E731
    error, voicing = pitch_agreement(tone(150), tone(150), SR)
    assert error < 0.01 and voicing > 0.95
    shifted, _ = pitch_agreement(tone(150), tone(165), SR)
    assert shifted == pytest.approx(0.10, abs=0.02)


@pytest.mark.skipif(shutil.which("flite") is None, reason="needs flite")
def test_evaluate_judges_intelligibility_with_pocketsphinx(tmp_path):
    import subprocess

    text = "the morning train was late again"
    wav = tmp_path / "s.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(wav)], check=True)
    clean = evaluate(identity_round_trip, [wav], SR, texts=[text])
    silent = evaluate(lambda x: (torch.zeros_like(x), 0.0), [wav], SR, texts=[text])
    assert clean["wer"] <= 0.35 and silent["wer"] == 1.0
