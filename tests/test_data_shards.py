import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiollm import audio, load_codec
from audiollm.cli import main
from audiollm.data import shards as shards_module
from audiollm.data.manifest import ManifestError, write_jsonl
from audiollm.data.shards import CodeShards, launcher_rank, tokenize_manifest
from tests.conftest import REPO


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
        {"id": "past-end", "audio": str(digits[0]), "start": 30.0},
    ]
    return write_jsonl(tmp_path / "manifest.jsonl", rows)


def digit_rows(shared_data: Path, n: int, skip: int = 0) -> list[dict]:
    """`n` real FSDD recordings (every speaker), as manifest rows."""
    paths = sorted((shared_data / "fsdd_spoken_digits" / "recordings").glob("*.wav"))[skip : skip + n]
    return [{"id": p.stem, "audio": str(p), "text": p.stem.split("_")[0]} for p in paths]


def codes_by_id(out: Path) -> dict[str, bytes]:
    shards = CodeShards(out)
    return {
        rec["id"]: np.ascontiguousarray(codes).tobytes()
        for codes, rec in (shards[i] for i in range(len(shards)))
    }


def ids(out: Path) -> list[str]:
    return [json.loads(line)["id"] for line in (out / "index.jsonl").read_text().splitlines()]


def test_tokenize_keeps_good_rejects_bad_and_matches_single_encoding(manifest, codec, tmp_path, capsys):
    out = tmp_path / "tok"
    summary = tokenize_manifest(manifest, out, codec)
    assert (summary.kept, summary.rejected) == (7, 4)
    rejects = {
        r["id"]: r["reason"] for r in map(json.loads, (out / "rejects.jsonl").read_text().splitlines())
    }
    assert rejects["missing"] == "file not found"
    assert rejects["corrupt"].startswith("unreadable or corrupt audio")
    assert rejects["short"].startswith("too short")
    assert rejects["past-end"].startswith("segment starts at 30.000s, after the end")
    assert list(rejects) == ["missing", "corrupt", "short", "past-end"]  # manifest order
    assert not re.search(r"/-\d", capsys.readouterr().err)  # the progress total is not negative

    shards = CodeShards(out)
    assert len(shards) == 7 and shards.codec["num_codebooks"] == 2
    manifest_ids = [json.loads(line)["id"] for line in manifest.read_text().splitlines()]
    assert ids(out) == manifest_ids[:7]  # the index is in manifest order
    for i in range(len(shards)):
        codes, rec = shards[i]
        assert isinstance(codes, np.memmap) or isinstance(codes.base, np.memmap)
        wav, _ = audio.load(rec["audio"], 24000, 1, rec.get("start", 0.0), rec.get("duration"))
        alone = codec.encode(wav[None])[0]  # on CPU, tokenize encodes one clip at a time: the very same codes
        assert torch.equal(torch.from_numpy(np.asarray(codes, np.int64)), alone)
    lj = next(r for r in shards.records if r["id"] == "lj2-part")
    assert lj["frames"] == 75 and lj["text"] == "in being comparatively"


def test_changed_manifest_replans_and_rewrites_only_what_changed(shared_data, codec, tmp_path):
    rows = digit_rows(shared_data, 24)
    for r in rows[:3]:  # files a later edit will replace
        r["audio"] = str(shutil.copy(r["audio"], tmp_path / Path(r["audio"]).name))
    m = write_jsonl(tmp_path / "m.jsonl", rows)
    out = tmp_path / "tok"
    first = tokenize_manifest(m, out, codec, shard_seconds=3.0)
    assert first.written_shards >= 5 and ids(out) == [r["id"] for r in rows]

    # Remove 3 records, add 2, edit a transcript and replace one file's audio.
    rows = rows[:12] + digit_rows(shared_data, 2, skip=100) + rows[15:]
    rows[1]["text"] = "edited"
    os.replace(shutil.copy(rows[20]["audio"], tmp_path / "new.wav"), rows[0]["audio"])
    m = write_jsonl(tmp_path / "m.jsonl", rows)
    again = tokenize_manifest(m, out, codec, shard_seconds=3.0)
    assert ids(out) == [r["id"] for r in rows] and again.kept == len(rows)
    assert 0 < again.written_shards < first.written_shards and again.reused_shards > 0
    assert again.removed_shards > 0
    assert {p.stem for p in out.glob("shard_*.npy")} == {r["shard"] for r in CodeShards(out).records}
    assert CodeShards(out).records[1]["text"] == "edited"

    fresh = tmp_path / "fresh"
    tokenize_manifest(m, fresh, codec, shard_seconds=3.0)
    assert (fresh / "index.jsonl").read_text() == (out / "index.jsonl").read_text()
    assert codes_by_id(fresh) == codes_by_id(out)
    assert codes_by_id(out)[rows[0]["id"]] == codes_by_id(out)[rows[20]["id"]]  # the replaced audio


def test_interrupted_run_resumes_and_keeps_finished_shards(manifest, codec, encodec_24k_checkpoint, tmp_path):
    out = tmp_path / "tok"
    first = tokenize_manifest(manifest, out, codec, shard_seconds=1.0)
    assert first.written_shards >= 3
    index = (out / "index.jsonl").read_text()
    # A kill during a shard: its summary was never renamed into place, a temporary file is left behind.
    killed = sorted(out.glob("shard_*.json"))[1]
    killed.unlink()
    (out / f".{killed.stem}.npy.tmp").write_bytes(b"half written")
    again = tokenize_manifest(manifest, out, codec, shard_seconds=1.0)
    assert (again.written_shards, again.reused_shards) == (1, first.written_shards - 1)
    assert (out / "index.jsonl").read_text() == index and not list(out.glob(".*.tmp"))

    other = load_codec("encodec_24khz", checkpoint=encodec_24k_checkpoint, bandwidth=3.0)
    with pytest.raises(ValueError, match="tokenised with another codec"):
        tokenize_manifest(manifest, out, other, shard_seconds=1.0)


def test_same_codec_named_by_relative_and_absolute_path(manifest, codec, tmp_path, monkeypatch):
    codec.save_pretrained(tmp_path / "codecs" / "enc")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "tok"
    tokenize_manifest(manifest, out, "codecs/enc")
    again = tokenize_manifest(manifest, out, str(tmp_path / "codecs" / "enc"))
    assert again.written_shards == 0 and again.kept == 7
    assert json.loads((out / "codec.json").read_text())["codec"] == str(tmp_path / "codecs" / "enc")


def test_folder_of_the_older_format_is_read_and_refused_for_resume(manifest, codec, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    description = {"codec": "encodec_24khz", "sample_rate": 24000, "channels": 1, "frame_rate": 75}
    (old / "codec.json").write_text(json.dumps({**description, "num_codebooks": 2, "codebook_size": 1024}))
    np.save(old / "shard_00000.npy", np.arange(10, dtype=np.uint16).reshape(2, 5))
    write_jsonl(
        old / "index.jsonl", [{"id": "a", "audio": "a.wav", "shard": "shard_00000", "offset": 1, "frames": 3}]
    )
    codes, rec = CodeShards(old)[0]
    assert rec["id"] == "a" and codes.tolist() == [[1, 2, 3], [6, 7, 8]]
    with pytest.raises(ValueError, match=r"older audiollm.*re-tokenise into a new --out folder"):
        tokenize_manifest(manifest, old, codec)


def test_damaged_shard_is_refused_when_opened(manifest, codec, tmp_path):
    out = tmp_path / "tok"
    tokenize_manifest(manifest, out, codec)
    shard = next(out.glob("shard_*.npy"))
    codes = np.load(shard)
    codes[1, -1] = 1024  # one code past the codebook
    np.save(shard, codes)
    with pytest.raises(ValueError, match=rf"{shard.name}: codes span \[\d+, 1024\], outside \[0, 1024\)"):
        CodeShards(out)
    np.save(shard, codes[:, :-1])  # truncated
    with pytest.raises(ValueError, match=rf"{shard.name}: codes shaped \(2, \d+\), expected \(2, >="):
        CodeShards(out)


def test_duplicate_ids_and_bad_bytes_name_the_file_and_line(manifest, codec, tmp_path):
    lines = manifest.read_text().splitlines(keepends=True)
    dup = tmp_path / "dup.jsonl"
    dup.write_text("".join(lines[:3] + lines[1:2]))
    with pytest.raises(
        ManifestError,
        match=rf"dup.jsonl:4: duplicate id '{json.loads(lines[1])['id']}' \(first at .*dup.jsonl:2\)",
    ):
        tokenize_manifest(dup, tmp_path / "a", codec)
    other = write_jsonl(tmp_path / "other.jsonl", [json.loads(lines[0])])
    with pytest.raises(
        ManifestError, match=r"other.jsonl:1: duplicate id .* \(first at .*manifest.jsonl:1\)"
    ):
        tokenize_manifest([manifest, other], tmp_path / "b", codec)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(lines[0].encode() + '{"id": "caf\xe9", "audio": "x.wav"}\n'.encode("latin-1"))
    with pytest.raises(ManifestError, match=r"latin.jsonl:2: not valid UTF-8 \(byte 0xe9 at column 12\)"):
        tokenize_manifest(latin, tmp_path / "c", codec)


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
    second.write_bytes(b'{"id": "x", "audio": "\xff.wav"}\n')
    assert main([*argv, "--out", str(out)]) == 1
    assert "b.jsonl:1: not valid UTF-8" in capsys.readouterr().err


def tokenize_processes(manifest: Path, out: Path, checkpoint: Path, world_size: int) -> list[str]:
    """Run `audiollm tokenize` as `world_size` processes with the variables torchrun sets; their stdouts."""
    argv = [sys.executable, "-m", "audiollm.cli", "tokenize", str(manifest), "--out", str(out)]
    argv += [
        "--codec",
        "encodec_24khz",
        "--checkpoint",
        str(checkpoint),
        "--bandwidth",
        "1.5",
        "--shard-seconds",
        "3",
    ]
    procs = []
    for rank in range(world_size):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "AUDIOLLM_THREADS": "1"}
        env |= {"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank)}
        procs.append(
            subprocess.Popen(
                argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr
        outs.append(stdout)
    return outs


@pytest.mark.slow
def test_two_ranks_write_the_folder_of_one_process_and_resume(shared_data, encodec_24k_checkpoint, tmp_path):
    m = write_jsonl(tmp_path / "m.jsonl", digit_rows(shared_data, 16, skip=300))
    one, two = tmp_path / "one", tmp_path / "two"
    tokenize_processes(m, one, encodec_24k_checkpoint, 1)
    rank0, rank1 = tokenize_processes(m, two, encodec_24k_checkpoint, 2)
    assert "tokenised 16 records" in rank0 and "by 2 ranks" in rank0
    assert "rank 1 of 2" in rank1 and " 0 written" not in rank1  # rank 1 did a share of the work
    files = sorted(p.name for p in one.iterdir())
    assert files == sorted(p.name for p in two.iterdir()) and len(files) > 6
    for name in files:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name  # codes, index, rejects, codec

    # A kill of rank 1 mid-shard: the rerun of both ranks redoes that shard alone.
    index = (two / "index.jsonl").read_text()
    killed = sorted(two.glob("shard_*.json"))[0]
    killed.unlink()
    rank0, rank1 = tokenize_processes(m, two, encodec_24k_checkpoint, 2)
    written = [int(re.search(r"(\d+) written", out)[1]) for out in (rank0, rank1)]
    assert sum(written) == 1 and (two / "index.jsonl").read_text() == index
    assert (one / killed.name).read_bytes() == killed.read_bytes()


def test_rank_0_stops_waiting_when_another_rank_fails(manifest, codec, tmp_path, monkeypatch):
    out = tmp_path / "tok"
    note = out / ".rank1.failed"
    note.parent.mkdir()
    note.write_text("OSError: an earlier run's failure\n")  # older than this run: not a reason to stop
    polls = []

    def rank_1_dies_while_rank_0_waits(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 2:
            note.write_text("AudioError: disk full\n")

    monkeypatch.setattr(shards_module.time, "sleep", rank_1_dies_while_rank_0_waits)
    with pytest.raises(RuntimeError, match=r"\.rank1\.failed: AudioError: disk full; rerun every rank"):
        tokenize_manifest(manifest, out, codec, shard_seconds=1.0, rank=0, world_size=2)
    assert len(polls) == 2


@pytest.mark.parametrize(
    ("env", "expect"),
    [
        ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, (3, 4, 1)),  # torchrun
        (
            {"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "1", "SLURM_NTASKS": "8"},
            (5, 8, 1),
        ),
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "8"}, (0, 1, 0)),  # a batch script without srun: one process
        ({}, (0, 1, 0)),
    ],
)
def test_launcher_rank(env, expect, monkeypatch):
    for key in (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "SLURM_PROCID",
        "SLURM_STEP_NUM_TASKS",
        "SLURM_LOCALID",
        "SLURM_NTASKS",
    ):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert launcher_rank() == expect
