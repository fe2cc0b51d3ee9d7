"""Manifests: a record's seconds (its segment of the file, cut at the end) and where its audio is."""

from pathlib import Path

import numpy as np
import pytest

from audiollm import audio
from audiollm.data.manifest import Record, read_manifest, record_seconds, write_jsonl


def test_record_seconds_is_the_segment_cut_at_the_end_of_the_file(tmp_path):
    clip = str(audio.save(tmp_path / "clip.wav", np.zeros(16000, np.float32), 16000))  # 1 s
    assert record_seconds(Record("whole", clip)) == 1.0
    assert record_seconds(Record("tail", clip, start=0.25)) == 0.75
    assert record_seconds(Record("inside", clip, start=0.25, duration=0.5)) == 0.5
    assert record_seconds(Record("too-long", clip, start=0.25, duration=10.0)) == 0.75
    with pytest.raises(audio.AudioError, match=r"segment starts at 1\.000s, after the end \(1\.000s\)"):
        record_seconds(Record("past-end", clip, start=1.0))
    empty = str(audio.save(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000))
    with pytest.raises(audio.AudioError, match=r"contains no audio samples \(zero length\)"):
        record_seconds(Record("empty", empty))


def test_audio_paths_are_absolute_when_the_manifest_is_named_by_a_relative_path(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "train.jsonl", [{"id": "a", "audio": "clips/a.wav"}])
    monkeypatch.chdir(tmp_path)
    (record,) = read_manifest("data/train.jsonl")
    assert Path(record.audio) == tmp_path / "data" / "clips" / "a.wav"
    monkeypatch.chdir(tmp_path / "data")  # a manifest re-written elsewhere still points at the same file
    write_jsonl(tmp_path / "copy.jsonl", [record])
    assert read_manifest(tmp_path / "copy.jsonl").__next__().audio == record.audio
