import pytest
import torch
from encodec import EncodecModel

from audiollm import audio, load_codec
from audiollm.codecs import Codec, CodecError, bitrate
from audiollm.codecs.encodec import DECODE_RMS_48KHZ, ENV_CHECKPOINT, EncodecCodec


@pytest.fixture(scope="module")
def speech_24k(speech_file):
    wav, _ = audio.load(speech_file, sample_rate=24000, channels=1, duration=1.5)
    return wav[None]  # (1, 1, N)


def test_codes_equal_the_encodec_package(encodec_24k_checkpoint, speech_24k):
    codec = load_codec("encodec_24khz", checkpoint=encodec_24k_checkpoint, bandwidth=6.0)
    assert isinstance(codec, Codec)
    assert (codec.sample_rate, codec.frame_rate, codec.num_codebooks, codec.codebook_size) == (
        24000,
        75.0,
        8,
        1024,
    )
    assert bitrate(codec) == 6000.0

    reference = EncodecModel.encodec_model_24khz(pretrained=False)
    reference.load_state_dict(torch.load(encodec_24k_checkpoint, weights_only=True))
    reference.set_target_bandwidth(6.0)
    with torch.no_grad():
        (expected, _), = reference.encode(speech_24k)  # fmt: skip
    codes = codec.encode(speech_24k)
    assert codes.dtype == torch.int64 and codes.shape == (1, 8, 113)
    assert torch.equal(codes, expected)
    assert codes.unique().numel() > 50, "codes should be non-degenerate"

    with torch.no_grad():
        expected_wav = reference.decode([(expected, None)])
    assert torch.allclose(codec.decode(codes), expected_wav)


def test_other_rates_and_channels_are_converted(encodec_24k_checkpoint, speech_file):
    codec = load_codec("encodec_24khz", checkpoint=encodec_24k_checkpoint, bandwidth=1.5)
    wav, sr = audio.load(speech_file, channels=1, duration=1.0)  # 22.05 kHz
    stereo = wav.expand(2, -1)[None]
    codes = codec.encode(stereo, sample_rate=sr)
    assert codes.shape == (1, 2, 75)
    assert codec.decode(codes).shape == (1, 1, 24000)


def test_env_variable_and_save_pretrained(encodec_24k_checkpoint, speech_24k, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_CHECKPOINT, str(encodec_24k_checkpoint.parent))  # a folder with the published name
    codec = load_codec("encodec_24khz")
    codes = codec.encode(speech_24k)
    codec.save_pretrained(tmp_path / "enc")
    monkeypatch.delenv(ENV_CHECKPOINT)
    again = load_codec(tmp_path / "enc")
    assert again.num_codebooks == codec.num_codebooks
    assert torch.equal(again.encode(speech_24k), codes)


def test_offline_without_weights_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_CHECKPOINT, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(
        CodecError, match=r"encodec_24khz-d7cc33bc\.th.*checkpoint=PATH.*AUDIOLLM_ENCODEC_CHECKPOINT"
    ):
        load_codec("encodec_24khz", download=False)
    with pytest.raises(CodecError, match=r"missing\.th: EnCodec checkpoint not found"):
        load_codec("encodec_24khz", checkpoint=tmp_path / "missing.th")


def test_wrong_file_is_named(tmp_path):
    bad = tmp_path / "bad.th"
    torch.save({"foo": torch.zeros(1)}, bad)
    with pytest.raises(CodecError, match=r"bad\.th: does not match the EnCodec architecture"):
        load_codec("encodec_24khz", checkpoint=bad)
    with pytest.raises(CodecError, match=r"bandwidth 5\.0 kbps not supported"):
        EncodecCodec("encodec_24khz", EncodecModel.encodec_model_24khz(pretrained=False), bandwidth=5.0)


def test_48khz_is_stereo_and_returns_audio_at_fixed_level(tmp_path):
    codec = EncodecCodec("encodec_48khz", EncodecModel.encodec_model_48khz(pretrained=False), bandwidth=3.0)
    assert (codec.sample_rate, codec.channels, codec.frame_rate, codec.num_codebooks) == (48000, 2, 150.0, 2)
    wav = 0.1 * torch.randn(2, 1, 16000)  # mono, 16 kHz: converted to stereo 48 kHz
    codes = codec.encode(wav, sample_rate=16000)
    assert codes.shape == (2, 2, 150)
    out = codec.decode(codes)
    assert out.shape == (2, 2, 48000)
    assert out.pow(2).mean(dim=(1, 2)).sqrt() == pytest.approx([DECODE_RMS_48KHZ] * 2, rel=1e-3)


def test_unknown_name_lists_known(tmp_path):
    with pytest.raises(CodecError, match="not one of encodec_24khz, encodec_48khz"):
        load_codec("soundstream")
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 1024\)"):
        EncodecCodec("encodec_24khz", EncodecModel.encodec_model_24khz(pretrained=False)).decode(
            torch.full((1, 2, 3), 1024)
        )
