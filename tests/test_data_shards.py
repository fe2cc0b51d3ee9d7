import json

import numpy as np
import pytest
import soundfile as sf
import torch

from audiollm import audio, load_codec
from audiollm.cli import main
from audiollm.data.manifest import write_jsonl
from audiollm.data.shards import CodeShards, tokenize_manifest


@pytest.fixture(scope="module")
def codec(encodec_24k_checkpoint):
    return load_codec("encodec_24khz", checkpoint=encodec_24k_checkpoint, bandwidth=1.5)


@pytest.fixture
def manifest(tmp_path, shared_data):
    digits = sorted((shared_data / "fsdd_spoken_digits" / "recordings").glob("*_theo_1*.wav"))[:6]
    rows = [{"id": p.stem, "audio": str(p), "text": p.stem.split("_")[0], "speaker": "theo"} for p in digits]
    lj = shared_data / "ljspeech_subset" / "wavs" / "LJ001-0002.flac"
    rows.append(
        {"id": "lj2-part", "audio": str(lj), "start": 0.25, "duration": 1.0, "text": "in being comparatively"}
    )
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF....WAVEnot audio at all")
    sf.write(str(tmp_path / "short.wav"), np.zeros(400, np.float32), 16000)
    rows += [
        {"id": "missing", "audio": "missing.wav"},
        {"id": "corrupt", "audio": "corrupt.wav"},
        {"id": "short", "audio": "short.wav"},
    ]
    return write_jsonl(tmp_path / "manifest.jsonl", rows)


def test_tokenize_keeps_good_rejects_bad_and_matches_single_encoding(manifest, codec, tmp_path):
    out = tmp_path / "tok"
    summary = tokenize_manifest(manifest, out, codec, batch_seconds=4.0)
    assert (summary.kept, summary.rejected) == (7, 3)
    rejects = {
        r["id"]: r["reason"] for r in map(json.loads, (out / "rejects.jsonl").read_text().splitlines())
    }
    assert rejects["missing"] == "file not found"
    assert rejects["corrupt"].startswith("unreadable or corrupt audio")
    assert rejects["short"].startswith("too short")

    shards = CodeShards(out)
    assert len(shards) == 7 and shards.codec["num_codebooks"] == 2
    for i in range(len(shards)):
        codes, rec = shards[i]
        assert isinstance(codes, np.memmap) or isinstance(codes.base, np.memmap)
        wav, _ = audio.load(rec["audio"], 24000, 1, rec.get("start", 0.0), rec.get("duration"))
        alone = codec.encode(wav[None])[0]
        assert codes.shape == alone.shape
        # Batched convolutions round differently; the test codebooks (sampled frames) hold near-ties in silence.
        assert (torch.from_numpy(np.asarray(codes, np.int64)) == alone).float().mean() > 0.95
    lj = next(r for r in shards.records if r["id"] == "lj2-part")
    assert lj["frames"] == 75 and lj["text"] == "in being comparatively"


def test_interrupted_run_resumes_and_keeps_finished_shards(manifest, codec, encodec_24k_checkpoint, tmp_path):
    out = tmp_path / "tok"
    first = tokenize_manifest(manifest, out, codec, shard_seconds=1.0)
    assert first.written_shards >= 3
    index = (out / "index.jsonl").read_text()
    # A kill during shard 1: its summary was never renamed into place, a temporary file is left behind.
    (out / "shard_00001.json").unlink()
    (out / ".shard_00001.npy.tmp").write_bytes(b"half written")
    again = tokenize_manifest(manifest, out, codec, shard_seconds=1.0)
    assert (again.written_shards, again.reused_shards) == (1, first.written_shards - 1)
    assert (out / "index.jsonl").read_text() == index

    other = load_codec("encodec_24khz", checkpoint=encodec_24k_checkpoint, bandwidth=3.0)
    with pytest.raises(ValueError, match="tokenised with another codec"):
        tokenize_manifest(manifest, out, other, shard_seconds=1.0)


def test_cli(manifest, encodec_24k_checkpoint, tmp_path, capsys):
    out = tmp_path / "cli"
    lines = manifest.read_text().splitlines(keepends=True)  # two manifests into one folder
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("".join(lines[:4]))
    second.write_text("".join(lines[4:]))
    argv = [
        "tokenize",
        str(first),
        str(second),
        "--codec",
        "encodec_24khz",
        "--checkpoint",
        str(encodec_24k_checkpoint),
    ]
    assert main([*argv, "--bandwidth", "1.5", "--out", str(out)]) == 0
    assert "tokenised 7 records" in capsys.readouterr().out
    assert (
        main(["tokenize", str(tmp_path / "nope.jsonl"), "--codec", "encodec_24khz", "--out", str(out)]) == 1
    )
    assert "manifest not found" in capsys.readouterr().err
