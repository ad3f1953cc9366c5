"""Stage runner: every stage writes one artifact directory under an output URI, with a manifest.

Layout: ``<root>/<stage>/`` holds the stage's files and, written LAST, ``manifest.json`` (resolved config,
its hash, the input artifacts and their content hashes, output file hashes, row counts, timings). The
manifest is the commit marker: a directory without one is an unfinished (crashed) run and is redone.

A stage is skipped when its manifest exists with the same config hash and the same input hashes, so a
killed pipeline resumes at the first unfinished stage. Locally, outputs are built in a temp directory and
renamed into place (atomic). For any other pyarrow filesystem URI (``s3://``, ``gs://``, ``file://``...)
the stage runs in a local scratch directory that is then uploaded file by file, manifest last; inputs are
downloaded into a local cache first, because the stages' libraries (HF, Ray Data) want local paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyarrow.fs as pafs

from llm_i2i.config import config_hash
from llm_i2i.io import atomic_dir, sha256_file, write_json
from llm_i2i.progress import log

MANIFEST = "manifest.json"


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
                key = hashlib.sha256(self.root.encode()).hexdigest()[:12]
                self.cache_dir = Path(tempfile.gettempdir()) / f"llm_i2i_cache_{key}"
        else:
            self.fs, self.base = None, str(Path(self.root).resolve())

    # ------------------------------------------------------------------ reading

    def local_dir(self, name: str) -> Path:
        """Where a stage's files are readable on this machine (downloaded for remote roots)."""
        if self.fs is None:
            return Path(self.base) / name
        return Path(self.cache_dir) / name

    def work_dir(self, name: str) -> Path:
        """A persistent local scratch directory for a stage that checkpoints its own progress (SFT)."""
        base = Path(self.base) if self.fs is None else Path(self.cache_dir)
        return base / "_work" / name

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
        input_hashes = {k: a.content_hash for k, a in sorted(inputs.items())}
        input_hashes.update({k: v for k, v in sorted((external_inputs or {}).items())})
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


def fingerprint_path(path: str | os.PathLike) -> str:
    """Cheap content fingerprint of an input outside the store: names, sizes and mtimes of its files."""
    p = Path(path)
    if not p.exists():
        return f"missing:{p}"
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    rows = [(str(q.relative_to(p) if p.is_dir() else q.name), q.stat().st_size, int(q.stat().st_mtime)) for q in files]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]
