"""Atomic writes are durable: data fsynced before the rename, the directory fsynced after it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llm_i2i import io


@pytest.fixture
def events(monkeypatch):
    """Record fsync (of which path) and rename calls, in order."""
    log: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        log.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        log.append(("rename", str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(io.os, "fsync", fsync)
    monkeypatch.setattr(io.os, "replace", replace)
    return log


def test_atomic_file_fsyncs_data_then_renames_then_fsyncs_the_directory(tmp_path, events):
    target = tmp_path / "a.json"
    io.write_json({"x": 1}, target)
    assert [e[0] for e in events] == ["fsync", "rename", "fsync"]
    assert Path(events[0][1]).parent == tmp_path and events[0][1] != str(target)  # the temp file's data
    assert events[1] == ("rename", str(target)) and events[2] == ("fsync", str(tmp_path))


def test_atomic_dir_fsyncs_every_file_and_directory_before_the_rename(tmp_path, events):
    target = tmp_path / "stage"
    with io.atomic_dir(target) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.bin").write_bytes(b"b")
        (tmp / "a.txt").write_text("a")
        built = str(tmp)
        events.clear()
    rename = events.index(("rename", str(target)))
    synced_before = {p for kind, p in events[:rename] if kind == "fsync"}
    assert {f"{built}/a.txt", f"{built}/sub/b.bin", f"{built}/sub", built} <= synced_before
    assert events[rename + 1:] == [("fsync", str(tmp_path))]
    assert (target / "sub" / "b.bin").read_bytes() == b"b"
