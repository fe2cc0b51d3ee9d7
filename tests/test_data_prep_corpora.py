"""data_prep on real corpora: fixture trees in each corpus's published layout, bad input, resume, real data."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import data_prep
from audiollm.cli import main as cli_main
from audiollm.data.manifest import read_manifest
from data_prep import common

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def tone(path: Path, seconds: float = 0.5, sr: int = 16000, fmt: str | None = None) -> Path:
    """Write a short sine to `path` (format from the suffix, or `fmt`, e.g. NIST for SPHERE)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(str(path), 0.3 * np.sin(2 * np.pi * 440 * t), sr, format=fmt, subtype="PCM_16")
    return path


def outputs(out: Path) -> tuple[dict[str, list], list[dict], dict]:
    """(records by split, rejects, summary) of a prepared folder, read back through read_manifest."""
    summary = json.loads((out / "summary.json").read_text())
    splits = {s: list(read_manifest(out / f"{s}.jsonl")) for s in summary["splits"]}
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    return splits, rejects, summary


def reasons(rejects: list[dict]) -> dict[str, str]:
    return {r["id"]: r["reason"] for r in rejects}


def librispeech_tree(root: Path) -> Path:
    """LibriSpeech layout with one good chapter per subset plus every kind of bad input."""
    ch = root / "LibriSpeech" / "train-clean-100" / "19" / "198"
    for i in range(1, 6):
        tone(ch / f"19-198-{i:04d}.flac")
    (ch / "19-198-0005.flac").write_bytes(b"this is not a flac file")  # unreadable audio
    (ch / "19-198.trans.txt").write_text(
        "19-198-0001 NORTHANGER ABBEY\n\n19-198-0002 CHAPTER ONE\n19-198-0003\n19-198-0005 BROKEN AUDIO\n"
        "19-198-0009 NO SUCH FILE\n"
    )  # 0003: empty text; 0004: no line (missing transcript); blank line skipped; 0009: no audio
    dev = root / "LibriSpeech" / "dev-clean" / "84" / "121"
    tone(dev / "84-121-0000.flac")
    (dev / "84-121.trans.txt").write_text("84-121-0000 GO DO YOU HEAR\n")
    latin = root / "LibriSpeech" / "test-clean" / "61" / "70"
    tone(latin / "61-70-0000.flac")
    (latin / "61-70.trans.txt").write_bytes("61-70-0000 CAF\xc9 AU LAIT\n".encode("latin-1"))  # not UTF-8
    return root / "LibriSpeech"


def test_librispeech_layout_splits_and_bad_input(tmp_path):
    src = librispeech_tree(tmp_path)
    main = data_prep.prepare("librispeech", src, tmp_path / "out")
    assert main == tmp_path / "out" / "train.jsonl"
    splits, rejects, summary = outputs(tmp_path / "out")
    assert [r.id for r in splits["train"]] == ["19-198-0001", "19-198-0002"]
    assert [r.id for r in splits["valid"]] == ["84-121-0000"]
    assert "test" not in splits
    first = splits["train"][0]
    assert (
        first.text == "NORTHANGER ABBEY"
        and first.speaker == "19"
        and first.extra["subset"] == "train-clean-100"
    )
    assert Path(first.audio).is_absolute() and first.duration == pytest.approx(0.5)
    why = reasons(rejects)
    assert "empty transcript" in why["19-198-0003"]
    assert "missing transcript" in why["19-198-0004"]
    assert "unreadable" in why["19-198-0005"]
    assert "no audio file" in why["19-198-0009"]
    assert "not valid UTF-8" in why["61-70-0000"]
    assert summary["kept"] == 3 and summary["rejected"] == 5


def test_rerun_does_no_work_and_a_changed_source_is_redone(tmp_path, monkeypatch):
    src = librispeech_tree(tmp_path)
    out = tmp_path / "out"
    data_prep.prepare("librispeech", src, out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    def no_work(path):
        raise AssertionError(f"probed {path} again")

    monkeypatch.setattr(common, "probe", no_work)
    assert data_prep.prepare("librispeech", src, out) == out / "train.jsonl"
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    monkeypatch.undo()
    (
        src / "train-clean-100" / "19" / "198" / "19-198-0004.flac"
    ).unlink()  # the source changed: one file fewer
    data_prep.prepare("librispeech", src, out)
    assert "19-198-0004" not in reasons(outputs(out)[1])


def test_output_folder_inside_the_source_still_resumes(tmp_path, monkeypatch):
    src = an4_tree(tmp_path)
    data_prep.prepare("an4", src, src / "manifests")
    monkeypatch.setattr(common, "probe", lambda path: pytest.fail(f"probed {path} again"))
    assert data_prep.prepare("an4", src, src / "manifests") == src / "manifests" / "train.jsonl"


def test_outputs_are_atomic_no_temporary_files_left(tmp_path):
    data_prep.prepare("librispeech", librispeech_tree(tmp_path), tmp_path / "out")
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_libritts_normalized_transcripts(tmp_path):
    ch = tmp_path / "LibriTTS" / "train-clean-360" / "14" / "208"
    for stem, text in [("14_208_000001_000000", "Chapter one."), ("14_208_000001_000001", "")]:
        tone(ch / f"{stem}.wav", sr=24000)
        (ch / f"{stem}.normalized.txt").write_text(text)
        (ch / f"{stem}.original.txt").write_text(text.upper())
    tone(ch / "14_208_000002_000000.wav", sr=24000)  # no transcript
    tone(tmp_path / "LibriTTS" / "test-clean" / "61" / "70" / "61_70_000000_000000.wav", sr=24000)
    (tmp_path / "LibriTTS" / "test-clean" / "61" / "70" / "61_70_000000_000000.normalized.txt").write_text(
        "Hi."
    )
    data_prep.prepare("libritts", tmp_path / "LibriTTS", tmp_path / "out")
    splits, rejects, _ = outputs(tmp_path / "out")
    assert [(r.id, r.text, r.split) for r in splits["train"]] == [
        ("14_208_000001_000000", "Chapter one.", "train")
    ]
    assert [r.id for r in splits["test"]] == ["61_70_000000_000000"]
    why = reasons(rejects)
    assert (
        "empty transcript" in why["14_208_000001_000001"]
        and "missing transcript" in why["14_208_000002_000000"]
    )


def test_ljspeech_metadata_columns_and_stable_split(tmp_path):
    src = tmp_path / "LJSpeech-1.1"
    for i in range(1, 4):
        tone(src / "wavs" / f"LJ001-{i:04d}.wav", sr=22050)
    (src / "metadata.csv").write_text(
        "LJ001-0001|Raw 1455.|Normalized fourteen fifty-five.\nLJ001-0002|Two|\n"
    )
    data_prep.prepare("ljspeech", src, tmp_path / "out")
    splits, rejects, _ = outputs(tmp_path / "out")
    records = [r for rs in splits.values() for r in rs]
    assert [(r.id, r.text) for r in records] == [("LJ001-0001", "Normalized fourteen fifty-five.")]
    assert records[0].split == common.hash_split("LJ001-0001")
    why = reasons(rejects)
    assert "empty transcript" in why["LJ001-0002"] and "missing transcript" in why["LJ001-0003"]


def test_an_id_on_two_lines_is_rejected_with_both_lines(tmp_path):
    src = tmp_path / "LJSpeech-1.1"
    for i in range(1, 3):
        tone(src / "wavs" / f"LJ001-{i:04d}.wav", sr=22050)
    (src / "metadata.csv").write_text("LJ001-0001|One|One.\nLJ001-0002|Two|Two.\n\nLJ001-0001|Other|Other.\n")
    data_prep.prepare("ljspeech", src, tmp_path / "out")
    splits, rejects, _ = outputs(tmp_path / "out")
    assert [r.id for rs in splits.values() for r in rs] == ["LJ001-0002"]
    (reject,) = rejects
    assert reject["id"] == "LJ001-0001" and reject["path"] == str(src / "metadata.csv")
    assert reject["reason"].startswith(f"id on lines 1, 4 of {src / 'metadata.csv'}")

    chapter = tmp_path / "LibriSpeech" / "dev-clean" / "84" / "121"
    tone(chapter / "84-121-0000.flac")
    tone(chapter / "84-121-0001.flac")
    (chapter / "84-121.trans.txt").write_text("84-121-0000 GO\n84-121-0001 HERE\n84-121-0000 STAY\n")
    data_prep.prepare("librispeech", tmp_path / "LibriSpeech", tmp_path / "ls")
    assert (
        "id on lines 1, 3 of"
        in reasons(json.loads(line) for line in (tmp_path / "ls" / "rejects.jsonl").read_text().splitlines())[
            "84-121-0000"
        ]
    )


def an4_tree(root: Path) -> Path:
    an4 = root / "an4"
    tone(an4 / "wav" / "an4_clstk" / "fash" / "an251-fash-b.sph", fmt="NIST")
    tone(an4 / "wav" / "an4test_clstk" / "fcaw" / "cen8-fcaw-b.sph", fmt="NIST")
    (an4 / "etc").mkdir()
    (an4 / "etc" / "an4_train.fileids").write_text(
        "an4_clstk/fash/an251-fash-b\nan4_clstk/fash/an252-fash-b\n"
    )
    (an4 / "etc" / "an4_train.transcription").write_text(
        "<s> YES </s> (an251-fash-b)\n<s> NO </s> (an252-fash-b)\n"
    )
    (an4 / "etc" / "an4_test.fileids").write_text("an4test_clstk/fcaw/cen8-fcaw-b\n")
    (an4 / "etc" / "an4_test.transcription").write_text("ELEVEN TWENTY SEVEN (cen8-fcaw-b)\n")
    return root


def test_an4_sphere_lists_and_transcription_formats(tmp_path):
    data_prep.prepare("an4", an4_tree(tmp_path), tmp_path / "out")
    splits, rejects, _ = outputs(tmp_path / "out")
    assert [(r.id, r.text, r.speaker) for r in splits["train"]] == [("an251-fash-b", "YES", "fash")]
    assert [(r.id, r.text) for r in splits["test"]] == [("cen8-fcaw-b", "ELEVEN TWENTY SEVEN")]
    assert "file not found" in reasons(rejects)["an252-fash-b"]


def test_fsdd_labels_from_file_names_and_official_split(tmp_path):
    for name in ["3_theo_0", "3_theo_4", "3_theo_5", "7_jackson_49"]:
        tone(tmp_path / "recordings" / f"{name}.wav", sr=8000)
    tone(tmp_path / "recordings" / "stray.wav", sr=8000)
    data_prep.prepare("fsdd", tmp_path, tmp_path / "out")
    splits, rejects, _ = outputs(tmp_path / "out")
    assert sorted(r.id for r in splits["test"]) == ["3_theo_0", "3_theo_4"]
    assert [(r.text, r.speaker) for r in splits["train"]] == [("three", "theo"), ("seven", "jackson")]
    assert "file name" in reasons(rejects)["stray"]


def test_musiccaps_clips_whole_videos_and_missing_audio(tmp_path):
    rows = [
        ("abcdefghijk", 30, 40, "A calm piano piece.", "False"),
        ("-0Gj8-vB1q4", 10, 20, "Loud rock with drums.", "True"),
        ("missing1234", 0, 10, "Never downloaded.", "False"),
        ("emptycapt00", 0, 10, " ", "False"),
    ]
    with open(tmp_path / "musiccaps-public.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ytid", "start_s", "end_s", "audioset_positive_labels", "aspect_list", "caption", "author_id",
                    "is_balanced_subset", "is_audioset_eval"])  # fmt: skip
        for ytid, s, e, cap, ev in rows:
            w.writerow([ytid, s, e, "/m/04rlf", "['piano']", cap, "4", "False", ev])
    tone(tmp_path / "audio" / "abcdefghijk.wav", seconds=60.0, sr=8000)  # the whole video
    tone(tmp_path / "audio" / "-0Gj8-vB1q4_10_20.flac", seconds=10.0, sr=8000)  # the clip
    tone(tmp_path / "audio" / "emptycapt00.wav", seconds=10.0, sr=8000)
    data_prep.prepare("musiccaps", tmp_path, tmp_path / "out")
    splits, rejects, _ = outputs(tmp_path / "out")
    (whole,), (clip,) = splits["train"], splits["test"]
    assert (whole.start, whole.duration, whole.caption) == (30.0, 10.0, "A calm piano piece.")
    assert (clip.start, clip.duration) == (0.0, 10.0)
    why = reasons(rejects)
    assert "not downloaded" in why["missing1234_0"] and "empty caption" in why["emptycapt00_0"]


def test_audiocaps_splits_and_audioset_style_names(tmp_path):
    header = "audiocap_id,youtube_id,start_time,caption\n"
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "train.csv").write_text(header + "91139,r1nicOVtvkQ,130,A woman talks nearby\n")
    (tmp_path / "dataset" / "val.csv").write_text(
        header + "97151,vfY_TJq7n_U,130,Rustling occurs\n5,x,soon,Odd\n"
    )
    (tmp_path / "dataset" / "test.csv").write_bytes(
        (header + "1,zzzzzzzzzzz,0,Caf\xe9 noise\n").encode("latin-1")
    )
    tone(tmp_path / "wav" / "Yr1nicOVtvkQ.wav", seconds=10.0, sr=8000)
    data_prep.prepare("audiocaps", tmp_path, tmp_path / "out")
    splits, rejects, _ = outputs(tmp_path / "out")
    assert [(r.id, r.caption) for r in splits["train"]] == [("91139", "A woman talks nearby")]
    why = reasons(rejects)
    assert "not downloaded" in why["97151"] and "not valid UTF-8" in why["test"]
    assert "start_time is not a number" in why["5"]
    (tmp_path / "dataset" / "train.csv").write_text("id,caption\n1,A dog\n")
    with pytest.raises(ValueError, match="every item was rejected"):
        data_prep.prepare("audiocaps", tmp_path, tmp_path / "out")
    assert (
        not (tmp_path / "out" / "summary.json").exists() and not (tmp_path / "out" / "train.jsonl").exists()
    )
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert "no column audiocap_id, youtube_id, start_time" in reasons(rejects)["train"]


def test_cli_prepare_prints_the_summary(tmp_path, capsys):
    assert cli_main(["prepare", "an4", "--src", str(an4_tree(tmp_path)), "--out", str(tmp_path / "out")]) == 0
    assert "kept 2 records (train 1, test 1" in capsys.readouterr().out
    assert (
        cli_main(["prepare", "an4", "--src", str(tmp_path), "--out", str(tmp_path / "o"), "--seed", "1"]) == 1
    )
    assert "does not take --seed" in capsys.readouterr().err
    assert cli_main(["prepare", "nope", "--out", str(tmp_path / "o")]) == 1


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
@pytest.mark.parametrize(
    ("corpus", "folder", "expect"),
    [
        ("ljspeech", "ljspeech_subset", {"kept": 32}),
        ("an4", "mini_an4", {"train": 5, "test": 2}),
        ("fsdd", "fsdd_spoken_digits", {"train": 1800, "test": 200}),
    ],
)
def test_real_corpora_in_shared_data(tmp_path, corpus, folder, expect):
    data_prep.prepare(corpus, SHARED / folder, tmp_path / "out")
    splits, rejects, summary = outputs(tmp_path / "out")
    assert rejects == []
    for key, n in expect.items():
        assert summary["kept"] == n if key == "kept" else len(splits[key]) == n
    for records in splits.values():
        assert all(Path(r.audio).is_file() and r.text and r.duration > 0 for r in records)


@pytest.mark.skipif(not (SHARED / "fsdd_spoken_digits").is_dir(), reason="../shared/data not present")
def test_fsdd_split_matches_its_labels_file(tmp_path):
    data_prep.prepare("fsdd", SHARED / "fsdd_spoken_digits", tmp_path / "out")
    splits, _, _ = outputs(tmp_path / "out")
    ours = {Path(r.audio).name: split for split, rs in splits.items() for r in rs}
    with open(SHARED / "fsdd_spoken_digits" / "labels.tsv") as f:
        theirs = {Path(row["file"]).name: row["split"] for row in csv.DictReader(f, delimiter="\t")}
    assert ours == theirs


@pytest.mark.skipif(not (SHARED / "english_speech_misc").is_dir(), reason="../shared/data not present")
def test_a_real_librispeech_utterance_laid_out_as_published(tmp_path):
    with open(SHARED / "english_speech_misc" / "transcripts.tsv") as f:
        text = next(
            r["text"] for r in csv.DictReader(f, delimiter="\t") if r["file"] == "2412-153948-0000.flac"
        )
    chapter = tmp_path / "LibriSpeech" / "dev-clean" / "2412" / "153948"
    chapter.mkdir(parents=True)
    (chapter / "2412-153948-0000.flac").symlink_to(SHARED / "english_speech_misc" / "2412-153948-0000.flac")
    (chapter / "2412-153948.trans.txt").write_text(f"2412-153948-0000 {text}\n")
    data_prep.prepare("librispeech", tmp_path / "LibriSpeech", tmp_path / "out")
    (record,) = outputs(tmp_path / "out")[0]["valid"]
    assert (record.text, record.speaker, record.duration) == (text, "2412", pytest.approx(11.66, abs=0.01))
