"""recipes/quickstart/ship.py: the shipped copy of a model loads and behaves like the original."""

import runpy
from pathlib import Path

import torch
from safetensors.torch import load_file

from audiollm.codecs import load_codec
from audiollm.codecs.native import PRESETS, NativeCodec, NativeCodecConfig
from audiollm.model import AudioLanguageModel

ship = runpy.run_path(str(Path(__file__).resolve().parents[1] / "recipes" / "quickstart" / "ship.py"))["ship"]


def test_shipped_lm_and_codec_load_in_float32_and_match(tmp_path, digits_model):
    torch.manual_seed(0)
    codec = NativeCodec(NativeCodecConfig(**PRESETS["tiny"]))
    codec.init_codebooks([torch.randn(2, 1, 4 * codec.config.hop_length)])
    codec.norm.running_var.fill_(1e5)  # as large as the trained codec's: beyond float16's range
    source = tmp_path / "model"
    source.mkdir()
    for f in digits_model.iterdir():
        if f.is_file():
            (source / f.name).write_bytes(f.read_bytes())
    codec.save_pretrained(source / "codec")

    (tmp_path / "shipped").mkdir()
    (tmp_path / "shipped" / "MODEL_CARD.md").write_text("# the card written by hand")
    size = ship(source, tmp_path / "shipped")
    assert (tmp_path / "shipped" / "MODEL_CARD.md").read_text() == "# the card written by hand"

    assert size < sum(f.stat().st_size for f in source.rglob("*") if f.is_file())
    stored = load_file(str(tmp_path / "shipped" / "codec" / "model.safetensors"))
    assert not any(k.endswith(("embed_avg", "cluster_size")) for k in stored)
    assert stored["norm.running_var"].dtype == torch.float32  # float16 would make it inf
    assert {v.dtype for k, v in stored.items() if v.is_floating_point() and k != "norm.running_var"} == {
        torch.float16
    }

    shipped_codec = load_codec(tmp_path / "shipped" / "codec")
    wav = 0.1 * torch.randn(1, 1, 16 * codec.config.hop_length)
    agree = (shipped_codec.encode(wav) == codec.eval().encode(wav)).float().mean()
    assert agree > 0.9

    original = AudioLanguageModel.from_pretrained(source)
    shipped = AudioLanguageModel.from_pretrained(tmp_path / "shipped")
    assert next(shipped.parameters()).dtype == torch.float32
    ids = torch.randint(0, original.config.vocab.text_size, (1, 12))
    torch.testing.assert_close(shipped.text_logits(ids), original.text_logits(ids), atol=2e-2, rtol=0)
