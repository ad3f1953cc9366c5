"""Atomic, durable artifact writes: every file appears whole (temp file + rename) or not at all.

Durable: the data is fsynced before the rename and the directory after it, so after a power cut a committed
name never points at a short or empty file (ext4/xfs may otherwise persist the rename before the data).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path in the target's directory; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        fsync_file(tmp_path)
        os.replace(tmp_path, path)
        fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a directory under a temp name and swap it into place when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        fsync_tree(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def locked_build(path: str | os.PathLike, is_current: Callable[[Path], bool], build: Callable[[Path], None],
                 lock: str = "build") -> Path:
    """`path`, built by `build(tmp)` unless `is_current(path)` holds: once per node however many processes ask.

    The build runs under an exclusive lock beside `path` (`.<name>.<lock>.lock`) and re-checks once it holds it,
    so a process that waited finds the work done; a second build's swap would pull the directory from under a
    process already reading it. `build` fills a temp directory that replaces `path` only when `build` returns."""
    path = Path(path)
    if path.exists() and is_current(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent / f".{path.name}.{lock}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if path.exists() and is_current(path):
            return path
        with atomic_dir(path) as tmp:
            build(tmp)
        return path
    finally:
        os.close(fd)  # releases the lock


def prune_least_recent(current: str | os.PathLike, keep: int, lock: str = "build") -> list[Path]:
    """Mark `current` (an entry of a cache directory that `locked_build` fills) as just used, then delete all but
    the `keep` most recently used entries beside it; returns the deleted ones.

    A cache keyed by content never reuses a name once its inputs change, so without this every new text or base
    leaves its old entry on disk for good. Use is the directory's mtime. An entry whose build lock another process
    holds is skipped, and a deleted entry is renamed away before it is removed, so no reader sees it half gone."""
    current = Path(current)
    os.utime(current)
    entries = sorted((p for p in current.parent.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    pruned = []
    for entry in [p for p in entries if p != current][max(keep - 1, 0):]:
        fd = os.open(entry.parent / f".{entry.name}.{lock}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            gone = entry.with_name(f".{entry.name}.pruned.tmp")
            os.replace(entry, gone)
            shutil.rmtree(gone, ignore_errors=True)
            pruned.append(entry)
        finally:
            os.close(fd)
    return pruned


def fsync_file(path: str | os.PathLike) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: str | os.PathLike) -> None:
    """Persist a directory's entries (a rename into it, a new file); a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike) -> None:
    """fsync every file under `root`, then every directory bottom-up (before the tree is renamed into place)."""
    for dirpath, _, files in os.walk(root, topdown=False):
        for name in files:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                fsync_file(p)
        fsync_dir(dirpath)


def write_parquet(table: pa.Table, path: str | os.PathLike, **kwargs: Any) -> Path:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **kwargs)
    return Path(path)


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    return Path(path)


def write_text(text: str, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
