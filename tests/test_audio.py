import struct

import numpy as np
import pytest
import soundfile as sf
import torch

from audiollm import audio
from audiollm.audio import AudioError


@pytest.mark.parametrize(
    ("suffix", "fmt", "subtype"),
    [
        (".wav", "WAV", "PCM_16"),
        (".flac", "FLAC", "PCM_16"),
        (".ogg", "OGG", "VORBIS"),
        (".mp3", "MP3", "MPEG_LAYER_III"),
        (".sph", "NIST", "PCM_16"),
    ],
)
def test_load_every_format(tmp_path, suffix, fmt, subtype):
    sr = 16000
    t = np.arange(sr) / sr
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = tmp_path / f"tone{suffix}"
    sf.write(str(path), x, sr, format=fmt, subtype=subtype)
    wav, got_sr = audio.load(path)
    assert got_sr == sr and wav.dtype == torch.float32 and wav.shape[0] == 1
    assert abs(wav.shape[1] - sr) < 0.1 * sr  # mp3/ogg may pad a little
    # Lossy codecs change samples but not the tone: compare energy.
    assert wav.pow(2).mean().sqrt().item() == pytest.approx(0.3 / np.sqrt(2), rel=0.1)


def test_channels_and_resample(tmp_path):
    path = tmp_path / "stereo.wav"  # two different channels, so that a downmix bug shows
    t = np.arange(11025) / 22050
    sf.write(
        str(path), np.stack([0.4 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)], 1), 22050
    )
    wav, sr = audio.load(path)
    assert wav.shape == (2, 11025) and sr == 22050 and not torch.allclose(wav[0], wav[1])
    assert torch.allclose(audio.load(path, channels=1)[0][0], wav.mean(0)), "mono is the mean of the channels"
    mono, sr = audio.load(path, sample_rate=16000, channels=1)
    assert mono.shape == (1, 8000) and sr == 16000
    assert torch.allclose(mono, audio.resample(wav.mean(0, keepdim=True), 22050, 16000), atol=1e-6)
    assert audio.to_channels(mono, 2).shape == (2, 8000)
    assert audio.resample(torch.zeros(1, 0), 24000, 16000).shape == (1, 0)  # e.g. a TTS that stopped at once


def test_segment_and_real_sphere(shared_data):
    sph = next((shared_data / "mini_an4").rglob("*.sph"))
    full, sr = audio.load(sph)
    part, _ = audio.load(sph, start=0.5, duration=0.25)
    assert sr == 16000 and part.shape[1] == 4000
    assert torch.equal(part, full[:, 8000:12000])


def test_save_round_trip(tmp_path):
    x = torch.rand(2, 1000) * 1.6 - 0.8
    for suffix in (".wav", ".flac"):
        path = audio.save(tmp_path / f"x{suffix}", x, 8000)
        y, sr = audio.load(path)
        assert sr == 8000 and torch.allclose(x, y, atol=1 / 2**14)
    with pytest.raises(AudioError, match=r"x\.mp3: cannot write"):
        audio.save(tmp_path / "x.mp3", x, 8000)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match=r"nope\.wav: file not found"):
        audio.load(tmp_path / "nope.wav")


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(AudioError, match=r"corrupt\.wav: unreadable or corrupt audio"):
        audio.load(path)
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.flac: file is empty"):
        audio.load(empty)


def test_zero_length(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(str(path), np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match=r"zero\.wav: contains no audio samples"):
        audio.load(path)


def test_non_finite(tmp_path):
    path = tmp_path / "nan.wav"
    x = np.zeros(100, np.float32)
    x[10] = np.nan
    sf.write(str(path), x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: contains NaN or infinite samples"):
        audio.load(path)


def test_sample_rate_zero(tmp_path):
    """A PCM WAV whose header says 0 Hz: libsndfile refuses it; we say why."""
    data = np.zeros(100, np.int16).tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, 0, 0, 2, 16)  # PCM, mono, 0 Hz, 0 B/s, align 2, 16 bit
    riff = (
        b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    )
    path = tmp_path / "rate0.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(riff)) + riff)
    with pytest.raises(AudioError, match=r"rate0\.wav: .*sample rate"):
        audio.load(path)


def test_loudness_follows_bs1770_and_is_minus_inf_where_undefined():
    t = torch.arange(48000) / 48000
    sine = torch.sin(2 * torch.pi * 997 * t)[None]  # (1, N): a full-scale 997 Hz sine reads -3.01 LUFS
    assert audio.loudness(sine, 48000) == pytest.approx(-3.01, abs=0.05)
    assert audio.loudness(0.1 * sine, 48000) == pytest.approx(-23.01, abs=0.05)
    assert audio.loudness(torch.zeros(1, 48000), 48000) == float("-inf")
    assert audio.loudness(sine[:, :1000], 48000) == float("-inf")  # shorter than one gating block


def unknown_length_flac(path, x, sr):
    """Write `x` as FLAC, then zero STREAMINFO's total-samples field (36 bits from byte 13 of the block),
    as a streaming encoder leaves it (e.g. ffmpeg writing to a pipe): a valid stream of unknown length."""
    sf.write(str(path), x, sr, format="FLAC")
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # the first metadata block is STREAMINFO
    info = 8  # 4 bytes of magic, 4 of block header
    data[info + 13] &= 0xF0
    data[info + 14 : info + 18] = bytes(4)
    path.write_bytes(bytes(data))
    return path


def test_flac_of_unknown_length_reads_whole(tmp_path):
    sr = 16000
    x = (0.3 * np.sin(np.arange(sr + 123) / 7)).astype(np.float32)
    path = unknown_length_flac(tmp_path / "stream.flac", x, sr)
    assert sf.info(str(path)).frames > 2**62  # libsndfile's "unknown"
    assert audio.info(path).frames == len(x)
    wav, got_sr = audio.load(path)
    whole, _ = audio.load(audio.save(tmp_path / "known.flac", x, sr))
    assert got_sr == sr and torch.equal(wav, whole)
    part, _ = audio.load(path, start=0.5, duration=0.25)
    assert torch.equal(part, whole[:, 8000:12000])
    with pytest.raises(AudioError, match="no audio samples in the segment"):
        audio.load(path, start=2.0)
