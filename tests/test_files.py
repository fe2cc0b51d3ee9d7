"""Atomic writes: the whole new file or folder, or the old one and no temporary left behind."""

import os

import pytest

from audiollm.files import atomic_path, atomic_write


def test_atomic_write_replaces_and_makes_parents(tmp_path):
    path = tmp_path / "a" / "b" / "x.txt"
    with atomic_write(path, "w") as f:
        f.write("première\n")
        assert not path.exists()  # nothing in place until the block ends
    assert path.read_bytes() == "première\n".encode()
    with atomic_write(path, fsync=True) as f:
        f.write(b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert os.listdir(path.parent) == ["x.txt"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_write(path, "w") as f:
        f.write("half")
        raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["x.json"]


def test_a_killed_writers_temporary_is_replaced(tmp_path):
    path = tmp_path / "x.bin"
    (tmp_path / ".x.bin.tmp").write_bytes(b"half written by a killed run, longer than the new file")
    with atomic_write(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["x.bin"]


def test_concurrent_writers_use_their_own_temporary(tmp_path):
    with atomic_path(tmp_path / "codec.json", concurrent=True) as tmp:
        assert tmp.name == f".codec.json.{os.getpid()}.tmp"
        tmp.write_text("{}")
    assert (tmp_path / "codec.json").read_text() == "{}"


def test_a_folder_replaces_the_old_folder(tmp_path):
    final = tmp_path / "100"
    (final / "stale").mkdir(parents=True)
    (tmp_path / ".100.tmp" / "half").mkdir(parents=True)  # a killed export
    with atomic_path(final) as tmp:
        assert not tmp.exists()
        tmp.mkdir()
        (tmp / "model.safetensors").write_bytes(b"w")
    assert os.listdir(final) == ["model.safetensors"] and os.listdir(tmp_path) == ["100"]
    with pytest.raises(ValueError), atomic_path(final) as tmp:
        tmp.mkdir()
        raise ValueError
    assert os.listdir(final) == ["model.safetensors"] and os.listdir(tmp_path) == ["100"]
