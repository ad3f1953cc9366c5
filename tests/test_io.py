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


def _entries(root: Path, ages: dict[str, int]) -> None:
    """Cache entries under `root`, entry `name` last used `ages[name]` seconds ago."""
    now = os.stat(root).st_mtime
    for name, age in ages.items():
        (root / name).mkdir()
        (root / name / "vectors.npy").write_bytes(b"x")
        os.utime(root / name, (now - age, now - age))


@pytest.mark.parametrize("seed", range(5))
def test_prune_keeps_the_current_entry_and_the_most_recently_used_others(tmp_path, seed):
    """Against brute force over random ages: the entry just used and the keep-1 youngest others stay, whatever
    their ages; hidden names (locks, builds in progress) are never entries."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ages = {f"e{n}": int(a) for n, a in enumerate(rng.permutation(1000)[:int(rng.integers(1, 9))] + 10)}
    _entries(tmp_path, ages)
    (tmp_path / ".e0.encode.lock").write_bytes(b"")
    (tmp_path / ".e9.x.tmp").mkdir()
    current = str(rng.choice(sorted(ages)))
    keep = int(rng.integers(1, 5))
    expected_kept = {current, *sorted((n for n in ages if n != current), key=ages.get)[:keep - 1]}
    pruned = io.prune_least_recent(tmp_path / current, keep, lock="encode")
    assert {p.name for p in pruned} == set(ages) - expected_kept
    assert {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")} == expected_kept
    # beside them only the pruned entries' (empty) lock files: nothing renamed away is left behind
    assert {p.name for p in tmp_path.iterdir() if p.name.startswith(".")} == {
        ".e0.encode.lock", ".e9.x.tmp", *(f".{p.name}.encode.lock" for p in pruned)}
    assert os.stat(tmp_path / current).st_mtime >= max(os.stat(tmp_path / n).st_mtime for n in expected_kept)


def test_prune_skips_an_entry_whose_build_lock_is_held(tmp_path):
    import fcntl

    _entries(tmp_path, {"new": 10, "old": 100, "older": 200})
    fd = os.open(tmp_path / ".old.encode.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another builder holds it (flock conflicts across open files)
        assert [p.name for p in io.prune_least_recent(tmp_path / "new", 1, lock="encode")] == ["older"]
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["new", "old"]
    finally:
        os.close(fd)
    assert [p.name for p in io.prune_least_recent(tmp_path / "new", 1, lock="encode")] == ["old"]
