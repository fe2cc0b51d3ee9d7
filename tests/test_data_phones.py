"""Phone timings: the manifest field, frame labels, flite's timings (recipes/codec/phones.py) and the
codebook probe of `bench.codec_quality --phones`."""

import importlib.util
import subprocess
from pathlib import Path

import pytest
import torch

from audiollm import audio
from audiollm.codecs.native import PRESETS, NativeCodec, NativeCodecConfig
from audiollm.data.manifest import ManifestError, Record, read_manifest, write_jsonl
from audiollm.data.phones import IGNORE, PHONE_INDEX, frame_labels, record_phones
from audiollm.eval.codec import phone_probe

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "codec" / "phones.py"


def load_recipe():
    spec = importlib.util.spec_from_file_location("codec_phones", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_frame_labels_take_the_phone_at_each_frame_centre():
    phones = [(PHONE_INDEX["pau"], 0.1), (PHONE_INDEX["s"], 0.25), (PHONE_INDEX["iy"], 0.3)]
    labels = frame_labels(phones, start=0.05, frames=14, rate=50.0)  # centres 0.06, 0.08, ... 0.32
    s, iy, pau = PHONE_INDEX["s"], PHONE_INDEX["iy"], PHONE_INDEX["pau"]
    assert labels.tolist() == [pau, pau] + [s] * 8 + [iy] * 2 + [IGNORE] * 2
    assert frame_labels(None, 0.0, 3, 50.0).tolist() == [IGNORE] * 3


@pytest.mark.parametrize(
    ("field", "problem"),
    [
        ([], "non-empty"),
        ([["qq", 0.1]], "item 0"),
        ([["s", 0.2], ["t", 0.1]], "before the previous end"),
    ],
)
def test_a_malformed_phones_field_is_named(field, problem):
    record = Record(id="r1", audio="a.wav", extra={"phones": field})
    with pytest.raises(ManifestError, match=f"train.jsonl: record 'r1', field 'phones.*{problem}"):
        record_phones(record, "train.jsonl")


def test_flite_rows_get_the_timings_of_the_audio_flite_speaks(tmp_path):
    text = "The police are shadowing her."
    wav = tmp_path / "slt.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(wav)], check=True)
    rows = [{"id": "a", "audio": "slt.wav", "text": text, "speaker": "flite-slt"},
            {"id": "b", "audio": "slt.wav", "text": text, "speaker": "espeak-en-us"}]  # fmt: skip
    write_jsonl(tmp_path / "train.jsonl", rows)
    assert load_recipe().main([str(tmp_path / "train.jsonl"), "--out", str(tmp_path / "out")]) == 0
    a, b = read_manifest(tmp_path / "out" / "train.jsonl")
    assert Path(a.audio).is_absolute() and Path(a.audio).is_file() and "phones" not in b.extra
    phones = record_phones(a, "out/train.jsonl")
    assert [p for p, _ in phones][:4] == [PHONE_INDEX[p] for p in ("pau", "dh", "ax", "p")]
    seconds = wav.stat().st_size / 2 / 16000  # 16-bit mono at 16 kHz (flite slt), header aside
    assert phones[-2][1] < seconds < phones[-1][1] + 0.2  # the last phone (a pause) ends with the audio


def test_the_probe_scores_a_code_that_names_the_phone_above_chance(tmp_path):
    """Two 'phones' as a tone and as silence: codebook 0 separates them, so its map beats chance."""
    codec = NativeCodec(NativeCodecConfig(**PRESETS["tiny"])).eval()
    t = torch.arange(16000) / 16000
    wav = torch.cat([torch.zeros(8000), 0.5 * torch.sin(2 * torch.pi * 440 * t[:8000])])[None, None]
    codec.init_codebooks([wav])
    path = audio.save(tmp_path / "x.wav", wav[0], 16000)
    record = Record(id="x", audio=str(path), extra={"phones": [["pau", 0.5], ["aa", 1.0]]})
    probe = phone_probe(codec, [record], [record])
    assert probe["chance"] == pytest.approx(0.5, abs=0.05)
    assert probe["accuracy"] > 0.8 and probe["bits"] > 0.5
