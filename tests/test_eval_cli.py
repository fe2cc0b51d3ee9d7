import json
import math
import shutil
from pathlib import Path

import pytest

from audiollm import audio
from audiollm.cli import main
from audiollm.data.manifest import write_jsonl
from audiollm.eval.report import Report, format_table


@pytest.fixture
def model_args(digits_model, encodec_24k_checkpoint, monkeypatch):
    monkeypatch.setenv("AUDIOLLM_ENCODEC_CHECKPOINT", str(encodec_24k_checkpoint))
    return ["--model", str(digits_model)]


@pytest.fixture
def manifest(shared_data, tmp_path):
    folder = shared_data / "fsdd_spoken_digits" / "recordings"
    rows = [{"id": "no_text", "audio": str(folder / "0_theo_7.wav")}]
    rows += [
        {"id": n, "audio": str(folder / f"{n}.wav"), "text": w, "caption": f"a voice says {w}"}
        for n, w in (("4_theo_40", "four"), ("6_nicolas_41", "six"), ("9_jackson_42", "nine"))
    ]
    return write_jsonl(tmp_path / "m.jsonl", rows)


def run(argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_report_table_and_json(tmp_path):
    report = Report("x", [{"system": "a", "wer": 0.25, "rtf": None}, {"system": "bb", "wer": math.nan}])
    lines = format_table(report.summary).splitlines()
    assert lines[0].split() == ["system", "wer", "rtf"]
    assert lines[1].split() == ["a", "0.25", "-"] and lines[2].split() == ["bb", "nan", "-"]
    assert len({len(line) for line in lines}) == 1, "columns are aligned"
    saved = json.loads(report.write(tmp_path / "r" / "out.json").read_text())
    assert saved["summary"][1] == {"system": "bb", "wer": None}, "NaN is written as null"


def test_eval_asr_prints_a_table_and_writes_json(model_args, manifest, tmp_path, capsys):
    out = tmp_path / "asr.json"
    code, stdout, _ = run(
        ["eval", "asr", "--manifest", str(manifest), "--limit", "2", "--out", str(out), *model_args], capsys
    )
    assert code == 0
    assert "system" in stdout and "wer" in stdout and "rtf" in stdout
    assert "skipped 1 records without 'text'" in stdout
    result = json.loads(out.read_text())
    assert result["task"] == "asr" and [i["id"] for i in result["items"]] == ["4_theo_40", "6_nicolas_41"]
    assert result["settings"]["manifest"] == str(manifest)


def test_eval_asr_quantized_loads_an_int8_model(model_args, manifest, tmp_path, capsys, monkeypatch):
    """`audiollm eval asr --quantize int8` scores the int8 model (the CPU int8 WER numbers come from it)."""
    from audiollm import quantize as quantization
    from audiollm.quantize import Int8Linear

    swapped = []
    real = quantization.quantize

    def spy(model, scheme="int8"):
        out = real(model, scheme)
        swapped.append(sum(isinstance(m, Int8Linear) for m in out.modules()))
        return out

    monkeypatch.setattr(quantization, "quantize", spy)
    out = tmp_path / "asr8.json"
    argv = [
        "eval",
        "asr",
        "--manifest",
        str(manifest),
        "--limit",
        "2",
        "--quantize",
        "int8",
        "--out",
        str(out),
    ]
    code, stdout, _ = run([*argv, *model_args], capsys)
    assert code == 0 and "wer" in stdout
    assert len(swapped) == 1 and swapped[0] > 0, "the evaluated model's Linear layers are int8"
    assert json.loads(out.read_text())["settings"]["quantize"] == "int8"
    code, _, err = run(
        ["eval", "asr", "--manifest", str(manifest), "--quantize", "int4", *model_args], capsys
    )
    assert code == 1 and "quantize='int4' is not supported" in err
    code, _, err = run(
        ["eval", "codec", "--manifest", str(manifest), "--quantize", "int8", *model_args], capsys
    )
    assert code == 1 and "not to 'codec'" in err


@pytest.mark.parametrize(
    ("task", "columns"), [("music", ("loudness_lufs", "silence_ratio")), ("tts", ("wer", "cer"))]
)
def test_eval_music_and_tts(task, columns, model_args, manifest, tmp_path, capsys):
    if task == "tts":
        pytest.importorskip("pocketsphinx")
    out = tmp_path / f"{task}.json"
    argv = ["eval", task, "--manifest", str(manifest), "--limit", "1", "--out", str(out), *model_args]
    code, stdout, _ = run(argv, capsys)
    assert code == 0
    assert all(c in stdout for c in columns)
    rows = json.loads(out.read_text())["summary"]
    assert [r["system"] for r in rows] == ["generated", "reference"]


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg with libopus")
def test_eval_codec_sets_the_model_codec_beside_opus(model_args, speech_file, tmp_path, capsys):
    # 1.5 s of real speech: STOI needs more than the ~0.4 s of a spoken digit to be defined.
    clip = audio.save(tmp_path / "lj.wav", *audio.load(speech_file, duration=1.5))
    manifest = write_jsonl(tmp_path / "speech.jsonl", [{"id": "lj", "audio": str(clip)}])
    out = tmp_path / "codec.json"
    code, stdout, _ = run(
        ["eval", "codec", "--manifest", str(manifest), "--out", str(out), *model_args], capsys
    )
    assert code == 0 and "opus" in stdout and "stoi" in stdout
    ours, opus = json.loads(out.read_text())["summary"]
    assert opus["system"] == "opus" and ours["kbps"] == 1.5  # EnCodec 24 kHz with 2 codebooks
    assert all(0 < row["stoi"] <= 1 and row["files"] == 1 for row in (ours, opus))
    assert all(k in row for row in (ours, opus) for k in ("log_mel_distance", "si_snr", "kbps"))


def test_eval_errors_are_one_line_and_name_the_problem(model_args, manifest, tmp_path, capsys):
    captions = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "audio": "a.wav", "caption": "rain"}])
    code, _, err = run(["eval", "asr", "--manifest", str(captions), *model_args], capsys)
    assert code == 1
    assert err.startswith("audiollm eval: error:") and "no record has a non-empty 'text'" in err
    assert str(captions) in err and err.count("\n") == 1
    speech_only = Path(
        shutil.copytree(model_args[1], tmp_path / "speech_only")
    )  # the same model, told asr/tts only
    config = json.loads((speech_only / "config.json").read_text())
    (speech_only / "config.json").write_text(json.dumps(config | {"tasks": ["asr", "tts"]}))
    code, _, err = run(["eval", "sfx", "--manifest", str(manifest), "--model", str(speech_only)], capsys)
    assert code == 1 and "not trained for sfx" in err
    code, _, err = run(["eval", "asr", "--manifest", str(tmp_path / "missing.jsonl"), *model_args], capsys)
    assert code == 1 and "manifest not found" in err
