"""Stage runner: every stage writes one artifact directory under an output URI, with a manifest.

Layout: ``<root>/<stage>/`` holds the stage's files and, written LAST, ``manifest.json`` (resolved config,
its hash, the input artifacts and their content hashes, output file hashes, row counts, timings). The
manifest is the commit marker: a directory without one is an unfinished (crashed) run and is redone.

A stage is skipped when its manifest exists with the same config hash and the same input hashes (content
hashes: other stages' outputs, and `fingerprint_path` of anything outside the store), so a killed pipeline
resumes at the first unfinished stage. Locally, outputs are built in a temp directory, fsynced and renamed into
place (atomic, durable). For any other pyarrow filesystem URI (``s3://``, ``gs://``, ``file://``...) the stage
runs in a local scratch directory that is then uploaded file by file, manifest last; inputs are downloaded into
a private per-user local cache first, because the stages' libraries (HF, Ray Data) want local paths.

One process at a time writes a root: `ArtifactStore.locked()` holds an exclusive lock on it (released by the
kernel when the process dies, so a killed run never blocks the next one).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import stat
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow.fs as pafs

from llm_i2i.config import config_hash
from llm_i2i.io import atomic_dir, sha256_file, write_json
from llm_i2i.progress import log

MANIFEST = "manifest.json"
LOCK = ".lock"


class OutDirInUse(ValueError):
    """Another process is writing this output root (a ValueError: the CLI reports it and exits 2)."""


def _is_uri(root: str) -> bool:
    return "://" in str(root)


@dataclass
class Artifact:
    """A finished stage output: a local directory to read from plus its manifest."""

    name: str
    path: Path
    manifest: dict[str, Any]

    @property
    def content_hash(self) -> str:
        return self.manifest["output_hash"]


@dataclass
class StageResult:
    artifact: Artifact
    skipped: bool
    seconds: float


@dataclass
class ArtifactStore:
    """Stage outputs under `root`: a local directory or any pyarrow filesystem URI."""

    root: str
    cache_dir: Path | None = None  # local copies of remote artifacts
    history: list[dict[str, Any]] = field(default_factory=list)  # what this process ran or skipped

    def __post_init__(self) -> None:
        self.root = str(self.root)
        if _is_uri(self.root):
            self.fs, self.base = pafs.FileSystem.from_uri(self.root)
            if self.cache_dir is None:
                self.cache_dir = private_cache_dir(self.root)
        else:
            self.fs, self.base = None, str(Path(self.root).resolve())

    # ------------------------------------------------------------------ reading

    def local_dir(self, name: str) -> Path:
        """Where a stage's files are readable on this machine (downloaded for remote roots)."""
        if self.fs is None:
            return Path(self.base) / name
        return Path(self.cache_dir) / name

    def work_dir(self, name: str, key: str) -> Path:
        """A persistent local scratch directory for a stage that checkpoints its own progress (SFT), one per `key`
        (`stage_key` of what the work depends on), so a run with other data or config never resumes another's."""
        return self._local_base() / "_work" / f"{name}-{key}"

    def prune_work_dirs(self, name: str, keep: Path) -> None:
        """Remove the stage's work directories of superseded keys (and the unkeyed one of older versions), with
        their `.<dir>.resume` siblings."""
        work = self._local_base() / "_work"
        for d in list(work.glob(f"{name}*")) + list(work.glob(f".{name}*.resume")):
            base = d.name[1:-len(".resume")] if d.name.endswith(".resume") else d.name
            if base != keep.name and (base == name or base.startswith(f"{name}-")):
                shutil.rmtree(d, ignore_errors=True)

    def _local_base(self) -> Path:
        return Path(self.base) if self.fs is None else Path(self.cache_dir)

    @staticmethod
    def stage_key(config: dict[str, Any], inputs: dict[str, Artifact],
                  external_inputs: dict[str, str] | None = None) -> str:
        """Short hash of a stage's config and its inputs' content hashes: what `run_stage` skips on."""
        return config_hash({"config": config, "inputs": _input_hashes(inputs, external_inputs)})

    # ------------------------------------------------------------------ locking

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the root's exclusive lock (re-entrant within this process); raise `OutDirInUse` if another holds it.

        On acquiring it, temp/old directories that a killed run left at the root are removed. For a remote root the
        lock file lives in the local cache, so it stops a second run on this machine only.
        """
        lock_path = self._local_base() / LOCK
        key = str(lock_path)
        with _HELD_GUARD:
            held = _HELD.get(key)
            if held is not None:
                held[1] += 1
        if held is None:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown process"
                os.close(fd)
                raise OutDirInUse(f"{self.root} is in use by another llm-i2i run ({owner}); wait for it to finish "
                                  f"or choose another --out") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n".encode(), 0)
            with _HELD_GUARD:
                _HELD[key] = [fd, 1]
        try:
            if held is None:
                self._remove_leftovers()
            yield
        finally:
            with _HELD_GUARD:
                entry = _HELD[key]
                entry[1] -= 1
                if entry[1] == 0:
                    del _HELD[key]
                    os.close(entry[0])  # closing releases the flock

    def _remove_leftovers(self) -> None:
        """`.<stage>.<random>.tmp` / `.<stage>.old` directories at the root: a killed run's half-built stages."""
        base = self._local_base()
        for p in list(base.glob(".*.tmp")) + list(base.glob(".*.old")):
            log.info(f"removing {p}: left by an interrupted run")
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    def manifest(self, name: str) -> dict[str, Any] | None:
        if self.fs is None:
            p = Path(self.base) / name / MANIFEST
            return json.loads(p.read_text()) if p.exists() else None
        path = f"{self.base}/{name}/{MANIFEST}"
        if self.fs.get_file_info(path).type == pafs.FileType.NotFound:
            return None
        with self.fs.open_input_stream(path) as f:
            return json.loads(f.read().decode())

    def get(self, name: str) -> Artifact:
        """A finished artifact (downloaded into the local cache if the root is remote)."""
        m = self.manifest(name)
        if m is None:
            raise FileNotFoundError(f"{self.root}/{name}: no finished artifact (missing {MANIFEST}); run its stage first")
        local = self.local_dir(name)
        if self.fs is not None:
            cached = local / MANIFEST
            if not (cached.exists() and json.loads(cached.read_text()).get("output_hash") == m["output_hash"]):
                with atomic_dir(local) as tmp:
                    pafs.copy_files(f"{self.base}/{name}", str(tmp), source_filesystem=self.fs,
                                    destination_filesystem=pafs.LocalFileSystem())
        return Artifact(name, local, m)

    # ------------------------------------------------------------------ running

    def run_stage(
        self,
        name: str,
        config: dict[str, Any],
        inputs: dict[str, Artifact],
        fn: Callable[[Path], dict[str, Any]],
        external_inputs: dict[str, str] | None = None,
    ) -> StageResult:
        """Run `fn(out_dir) -> stats` unless an identical finished run exists; return the artifact.

        `external_inputs` are fingerprints of things outside the store (a data path, a reused checkpoint).
        """
        with self.locked():
            return self._run_stage(name, config, inputs, fn, external_inputs)

    def _run_stage(self, name, config, inputs, fn, external_inputs) -> StageResult:
        input_hashes = _input_hashes(inputs, external_inputs)
        chash = config_hash(config)
        existing = self.manifest(name)
        if existing and existing.get("config_hash") == chash and existing.get("inputs") == input_hashes:
            log.info(f"[{name}] skipped: finished run with config {chash} and the same inputs exists")
            self.history.append({"stage": name, "status": "skipped", "seconds": 0.0})
            return StageResult(self.get(name), True, 0.0)
        if existing:
            log.info(f"[{name}] config or inputs changed since the last run: redoing it")
        log.info(f"[{name}] running (config {chash})")
        t0 = time.perf_counter()
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if self.fs is None:
            final = Path(self.base) / name
            with atomic_dir(final) as tmp:
                stats = fn(tmp) or {}
                manifest = self._manifest(name, config, chash, input_hashes, tmp, stats, t0, started)
                write_json(manifest, tmp / MANIFEST)
        else:
            scratch = Path(tempfile.mkdtemp(prefix=f"llm_i2i_{name}_"))
            try:
                stats = fn(scratch) or {}
                manifest = self._manifest(name, config, chash, input_hashes, scratch, stats, t0, started)
                self._upload(name, scratch, manifest)
                with atomic_dir(self.local_dir(name)) as tmp:
                    shutil.copytree(scratch, tmp, dirs_exist_ok=True)
                    write_json(manifest, tmp / MANIFEST)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        seconds = time.perf_counter() - t0
        log.info(f"[{name}] done in {seconds:,.1f}s")
        self.history.append({"stage": name, "status": "ran", "seconds": seconds})
        return StageResult(Artifact(name, self.local_dir(name), manifest), False, seconds)

    def _manifest(self, name, config, chash, input_hashes, out_dir: Path, stats, t0, started) -> dict[str, Any]:
        files = {
            str(p.relative_to(out_dir)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(out_dir.rglob("*"))
            if p.is_file() and p != out_dir / MANIFEST
        }
        digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
        return {
            "stage": name,
            "config": config,
            "config_hash": chash,
            "inputs": input_hashes,
            "files": files,
            "output_hash": digest,
            "stats": stats,
            "started_utc": started,
            "seconds": time.perf_counter() - t0,
        }

    def _upload(self, name: str, local: Path, manifest: dict[str, Any]) -> None:
        """Old manifest first out, files in, new manifest last: a reader never sees a mixed artifact."""
        dest = f"{self.base}/{name}"
        old = f"{dest}/{MANIFEST}"
        if self.fs.get_file_info(old).type != pafs.FileType.NotFound:
            self.fs.delete_file(old)
        self.fs.create_dir(dest, recursive=True)
        pafs.copy_files(str(local), dest, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)
        with self.fs.open_output_stream(old) as f:
            f.write((json.dumps(manifest, indent=2, default=str) + "\n").encode())


def _input_hashes(inputs: dict[str, Artifact], external_inputs: dict[str, str] | None) -> dict[str, str]:
    hashes = {k: a.content_hash for k, a in sorted(inputs.items())}
    hashes.update(sorted((external_inputs or {}).items()))
    return hashes


_HELD: dict[str, list] = {}  # lock file -> [fd, depth] of the locks this process holds
_HELD_GUARD = threading.Lock()


def fingerprint_path(path: str | os.PathLike) -> str:
    """Content fingerprint of an input outside the store (a data file or directory, a checkpoint): the relative
    names and SHA-256 of its files. Content, not size/mtime: an edit that keeps both still changes it."""
    p = Path(path)
    if not p.exists():
        return f"missing:{p}"
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    rows = [(str(q.relative_to(p) if p.is_dir() else q.name), sha256_file(q)) for q in files]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def private_cache_dir(root: str) -> Path:
    """The local cache of a remote root: `<user cache dir>/llm_i2i/remote-<hash of root>`, mode 0700.

    Under the user's own cache directory (XDG_CACHE_HOME or ~/.cache), never a predictable name in a shared /tmp
    that another user could create first and fill. Where that directory cannot be used, a fresh
    `tempfile.mkdtemp` (private, not reused across runs).
    """
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llm_i2i"
    key = hashlib.sha256(root.encode()).hexdigest()[:16]
    try:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        _require_private(base)
        path = base / f"remote-{key}"
        path.mkdir(exist_ok=True, mode=0o700)
        _require_private(path)
        return path
    except OSError as e:
        path = Path(tempfile.mkdtemp(prefix=f"llm_i2i_cache_{key}_"))
        log.warning(f"cache for {root}: {e}; using the private temp directory {path} (not reused by later runs)")
        return path


def _require_private(path: Path) -> None:
    """A real directory owned by this user, closed to others (tightened to 0700 if it is ours but wider)."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise PermissionError(f"{path}: not a directory owned by this user (uid {os.getuid()}); refusing to cache "
                              f"artifacts there")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
