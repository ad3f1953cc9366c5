"""Stage runner: every stage writes one artifact directory under an output URI, with a manifest.

Layout: ``<root>/<stage>/`` holds the stage's files and, written LAST, ``manifest.json`` (resolved config,
its hash, the input artifacts and their content hashes, output file hashes, row counts, timings). The
manifest is the commit marker: a directory without one is an unfinished (crashed) run and is redone.

A stage is skipped when its manifest exists with the same config hash and the same input hashes (content
hashes: other stages' outputs, and `fingerprint_path` of anything outside the store), so a killed pipeline
resumes at the first unfinished stage. Locally, outputs are built in a temp directory, fsynced and renamed into
place (atomic, durable). For any other pyarrow filesystem URI (``s3://``, ``gs://``, ``file://``...) the stage
runs in a local scratch directory that is then uploaded file by file, manifest last; inputs are downloaded into
a private per-user cache on this node first, because the stages' libraries (HF, Ray Data) want local paths.

Ray workers on other nodes never read the driver's cache: `portable` turns the driver's paths into its cached
artifacts into `NodeLocalPath`s (root, artifact, content hash, path inside), and `materialize`, called in the
worker, fetches that artifact into the worker node's own cache (`llm_i2i.uri.fetch_dir`) and returns the path.

One process at a time writes a root: `ArtifactStore.locked()` holds an exclusive lock on it (released by the
kernel when the process dies, so a killed run never blocks the next one).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
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
from llm_i2i.uri import exists, fetch_dir, filesystem, is_uri, private_cache_dir, uri_join

MANIFEST = "manifest.json"
LOCK = ".lock"


class OutDirInUse(ValueError):
    """Another process is writing this output root (a ValueError: the CLI reports it and exits 2)."""


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
        if is_uri(self.root):
            self.fs, self.base = filesystem(self.root)
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

    def work_uri(self, name: str, key: str) -> str | None:
        """For a URI root, where the workers of a stage that checkpoints its progress (SFT) share it:
        `<root>/_work/<name>-<key>`; None for a local root (the work dir itself is shared then)."""
        return None if self.fs is None else uri_join(self.root, "_work", f"{name}-{key}")

    def prune_work_dirs(self, name: str, keep: Path) -> None:
        """Remove the stage's work directories of superseded keys (and the unkeyed one of older versions), with
        their `.<dir>.resume` siblings; for a URI root also the superseded `<root>/_work/<name>-<key>`."""
        work = self._local_base() / "_work"
        for d in list(work.glob(f"{name}*")) + list(work.glob(f".{name}*.resume")):
            base = d.name[1:-len(".resume")] if d.name.endswith(".resume") else d.name
            if base != keep.name and (base == name or base.startswith(f"{name}-")):
                shutil.rmtree(d, ignore_errors=True)
        if self.fs is not None and exists(self.fs, f"{self.base}/_work"):
            for info in self.fs.get_file_info(pafs.FileSelector(f"{self.base}/_work")):
                if info.base_name != keep.name and info.base_name.startswith(f"{name}-"):
                    self.fs.delete_dir(info.path)

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
        if self.fs is None:
            return Artifact(name, self.local_dir(name), m)
        return Artifact(name, localize(self.root, name, m["output_hash"], self.cache_dir), m)

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
                _register(self.local_dir(name), self.root, name, manifest["output_hash"])
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


def localize(root: str, name: str, output_hash: str, cache: Path | None = None) -> Path:
    """This node's copy of the finished artifact `name` of the URI root `root` with content hash `output_hash`:
    `<this node's cache of root>/<name>`, fetched if absent or of other content. Fails when the root no longer
    holds that content (a later run replaced the artifact)."""
    fs, base = filesystem(root)
    local = (cache or private_cache_dir(root)) / name

    def current(d: Path) -> bool:
        m = d / MANIFEST
        return m.exists() and json.loads(m.read_text()).get("output_hash") == output_hash

    if not current(local):
        remote, found = f"{base}/{name}/{MANIFEST}", None
        if exists(fs, remote):
            with fs.open_input_stream(remote) as f:
                found = json.loads(f.read().decode()).get("output_hash")
        if found != output_hash:
            raise ValueError(f"{root}/{name}: holds {f'content {found}' if found else 'no finished artifact'}, not the "
                             f"{output_hash} this worker was given (another run replaced it); rerun the stage")
    fetch_dir(fs, f"{base}/{name}", local, current)
    _register(local, root, name, output_hash)
    return local


@dataclass(frozen=True)
class NodeLocalPath:
    """A path inside a finished artifact of a URI root, as it travels to a Ray worker: `resolve()` on whichever
    node holds it gives that node's own copy (`localize`), never the driver's."""

    root: str
    name: str
    output_hash: str
    rel: str
    as_path: bool  # a Path where the driver had one, else a str

    def resolve(self) -> Path | str:
        p = localize(self.root, self.name, self.output_hash)
        p = p / self.rel if self.rel else p
        return p if self.as_path else str(p)


_LOCAL_COPIES: dict[Path, tuple[str, str, str]] = {}  # this process's copies: local dir -> (root, name, hash)


def _register(local: Path, root: str, name: str, output_hash: str) -> None:
    for key in {Path(os.path.abspath(local)), Path(local).resolve()}:
        _LOCAL_COPIES[key] = (root, name, output_hash)


def portable(value: Any) -> Any:
    """`value` (paths, strings, and dicts / lists / tuples / dataclasses of them) with every path into this
    process's copy of a remote artifact replaced by a `NodeLocalPath`; everything else as is."""
    if isinstance(value, (str, Path)) and _LOCAL_COPIES and os.path.isabs(value):
        p = Path(os.path.normpath(value))
        for local, (root, name, output_hash) in _LOCAL_COPIES.items():
            if p == local or local in p.parents:
                return NodeLocalPath(root, name, output_hash, "" if p == local else p.relative_to(local).as_posix(),
                                     isinstance(value, Path))
        return value
    return _walk(value, portable)


def materialize(value: Any) -> Any:
    """The inverse of `portable`, on the node that calls it: every `NodeLocalPath` becomes this node's path."""
    if isinstance(value, NodeLocalPath):
        return value.resolve()
    return _walk(value, materialize)


def call_materialized(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn` on `portable` arguments, resolved on this node first: what a Ray task runs."""
    return fn(*materialize(args), **materialize(kwargs))


def _walk(value: Any, fn: Callable[[Any], Any]) -> Any:
    if isinstance(value, dict):
        return {k: fn(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(fn(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: fn(getattr(value, f.name))
                                             for f in dataclasses.fields(value) if f.init})
    return value
