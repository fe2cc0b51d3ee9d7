import json

import pytest
import torch

from audiollm.codecs import CodecError, bitrate, load_codec
from audiollm.codecs.native import PRESETS, NativeCodec, NativeCodecConfig


def tiny_codec(**overrides) -> NativeCodec:
    torch.manual_seed(0)
    codec = NativeCodec(NativeCodecConfig(**{**PRESETS["tiny"], **overrides})).eval()
    codec.init_codebooks([torch.randn(2, codec.channels, 4 * codec.config.hop_length) for _ in range(2)])
    return codec


@pytest.mark.parametrize(
    ("sample_rate", "strides", "channels"),
    [(16000, (2, 4, 5, 8), 1), (24000, (2, 4, 5, 6), 1), (32000, (4, 8), 2)],
)
def test_encode_decode_shapes(sample_rate, strides, channels):
    codec = tiny_codec(sample_rate=sample_rate, strides=strides, channels=channels)
    hop = codec.config.hop_length
    wav = torch.randn(3, channels, 5 * hop + 7)  # not a whole number of frames: padded to 6
    codes = codec.encode(wav)
    assert codes.shape == (3, 4, 6) and codes.dtype == torch.int64
    assert 0 <= codes.min() and codes.max() < codec.codebook_size
    assert codec.decode(codes).shape == (3, channels, 6 * hop)
    assert codec.frame_rate == sample_rate / hop


def test_encode_resamples_other_rates():
    codec = tiny_codec()
    codes = codec.encode(torch.randn(1, 1, 8000), sample_rate=8000)  # 1 s at 8 kHz -> 1 s at 16 kHz
    assert codes.shape[-1] == 16000 // codec.config.hop_length


def test_save_load_round_trip_gives_the_same_codes(tmp_path):
    codec = tiny_codec()
    wav = torch.randn(2, 1, 3200)
    codec.save_pretrained(tmp_path / "codec")
    config = json.loads((tmp_path / "codec" / "config.json").read_text())
    assert config["codec_type"] == "native" and config["strides"] == [2, 4, 5, 8]
    loaded = load_codec(tmp_path / "codec")
    assert isinstance(loaded, NativeCodec)
    assert torch.equal(loaded.encode(wav), codec.encode(wav))
    assert torch.equal(loaded.decode(codec.encode(wav)), codec.decode(codec.encode(wav)))


def test_fewer_codebooks_are_a_prefix_and_decode(tmp_path):
    codec = tiny_codec()
    wav = torch.randn(1, 1, 3200)
    full = codec.encode(wav)
    codec.save_pretrained(tmp_path)
    low = load_codec(tmp_path, num_codebooks=2)
    assert low.num_codebooks == 2 and bitrate(low) == bitrate(codec) / 2
    assert torch.equal(low.encode(wav), full[:, :2])
    assert low.decode(full[:, :2]).shape == (1, 1, 3200)
    with pytest.raises(CodecError, match="num_codebooks"):
        codec.set_num_codebooks(5)


def test_bitrate_formula():
    codec = NativeCodec(NativeCodecConfig(**PRESETS["speech16k"]))
    assert codec.frame_rate == 50
    assert bitrate(codec) == 50 * 12 * 10 == 6000
    codec.set_num_codebooks(6)
    assert bitrate(codec) == 3000


def test_untrained_codebooks_refuse_to_encode():
    codec = NativeCodec(NativeCodecConfig(**PRESETS["tiny"]))
    assert not codec.initialised
    with pytest.raises(CodecError, match="not initialised"):
        codec.encode(torch.randn(1, 1, 320))


def test_training_forward_uses_n_q_codebooks_and_has_gradients():
    codec = tiny_codec().train()
    wav = torch.randn(2, 1, 1600)
    recon, codes, commit, latent = codec(wav, n_q=3)
    assert recon.shape == wav.shape and codes.shape == (3, 2, 5) and latent.shape[::2] == (2, 5)
    ((recon - wav).abs().mean() + commit).backward()
    assert codec.encoder.model[0].conv.conv.weight_v.grad is not None


def test_bad_saved_config_is_named(tmp_path):
    tiny_codec().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "n_filterz": 3}))
    with pytest.raises(CodecError, match="n_filterz"):
        load_codec(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "n_filters": 8}))
    with pytest.raises(CodecError, match="weights do not match"):
        load_codec(tmp_path)


def test_init_scales_keeps_the_signal_alive_through_the_codec(speech_file):
    """Default init shrinks the signal ~2x a layer; after init_scales the latent varies in time and the
    decoder's output has the input's level."""
    from audiollm import audio

    wav, _ = audio.load(speech_file, 16000, 1, duration=1.0)
    x = wav[None]  # (1, 1, N)
    codec = NativeCodec(NativeCodecConfig(n_filters=8, lstm_layers=1, dimension=16, num_codebooks=2))
    before = codec.encoder(x).std(-1).mean()
    codec.init_scales(x)
    with torch.no_grad():
        latent = codec.encoder(x)  # (1, D, T)
        out = codec.decoder(latent)
    assert latent.std(-1).mean() > 20 * before
    assert latent.std(-1).mean() > 0.3
    assert float(out.std()) == pytest.approx(float(x.std()), rel=0.05)


def test_the_istft_decoder_makes_whole_frames_from_magnitude_and_phase():
    codec = tiny_codec(decoder="istft")
    hop = codec.config.hop_length
    codes = codec.encode(torch.randn(2, 1, 7 * hop))
    wav = codec.decode(codes)
    assert wav.shape == (2, 1, 7 * hop) and torch.isfinite(wav).all()
    with pytest.raises(CodecError, match="mono"):
        NativeCodec(NativeCodecConfig(**{**PRESETS["tiny"], "decoder": "istft", "channels": 2}))
    with pytest.raises(CodecError, match="decoder"):
        NativeCodec(NativeCodecConfig(**{**PRESETS["tiny"], "decoder": "hifigan"}))


def test_the_latent_is_centred_before_quantisation():
    # a constant offset in the encoder's output does not reach the codebooks: the latent norm removes it
    codec = tiny_codec()
    codec.train()
    wav = torch.randn(4, 1, 8 * codec.config.hop_length)
    with torch.no_grad():
        codec.encoder.model[-1].conv.conv.bias.add_(50.0)
        z = codec.latent(wav)  # (B, D, T)
        raw = codec.encoder(wav)
    assert raw.mean(dim=(0, 2)).abs().min() > 10  # the offset is there before the norm ...
    assert z.mean(dim=(0, 2)).abs().max() < 1e-2 and z.std(dim=(0, 2)).max() < 1.01  # ... and gone after it


def test_codecs_saved_before_the_latent_norm_still_load(tmp_path):
    codec = tiny_codec(latent_norm=False)
    codec.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for key in ("latent_norm", "decoder", "decoder_dim", "decoder_layers"):
        del config[key]  # the fields a file written by the earlier release lacks
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = load_codec(tmp_path)
    wav = torch.randn(1, 1, 3200)
    assert not loaded.config.latent_norm and torch.equal(loaded.encode(wav), codec.encode(wav))
