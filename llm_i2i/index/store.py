"""The I2I index on disk, one self-contained directory:

- `neighbors.parquet` (item_id, neighbor_id, score, rank): the portable table for analysis and joins;
- `item_ids.npy` (int64, sorted), `indptr.npy` (int64), `neighbors.npy` (int32 dense indices), `scores.npy`
  (float32): the serving layout, opened with `mmap_mode='r'` so replicas share pages and load in milliseconds;
- `manifest.json`: format version, content version, backbone, config hash, item count, K, the sha256 of
  every file and `manifest_checksum`, the sha256 of the manifest's own canonical JSON (every other field), so a
  hand-edited or damaged manifest is refused like a damaged array.

`load_index(verify=True)` validates the whole manifest (schema, types, bounds, `k` against the real row lengths),
hashes each file through the same memory mapping it then serves (open once, map, hash the mapped bytes: nothing can
swap the file between the check and the use), and checks the CSR invariants, so a corrupt, half-copied or hostile
directory is refused with an error naming the bad file and field instead of serving garbage or a 500.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from llm_i2i.i2i.base import Neighbors
from llm_i2i.io import atomic_dir, sha256_file, write_json, write_parquet

INDEX_FORMAT_VERSION = 3  # 3: manifest_checksum covers the manifest itself
MANIFEST = "manifest.json"
TABLE_FILE = "neighbors.parquet"
# serving array name -> dtype; the file is `<name>.npy`
SERVING_ARRAYS: dict[str, np.dtype] = {
    "item_ids": np.dtype(np.int64),
    "indptr": np.dtype(np.int64),
    "neighbors": np.dtype(np.int32),
    "scores": np.dtype(np.float32),
}
# every file an index directory holds besides the manifest; a manifest naming any other file is refused, so no
# name (`../x`, `/etc/passwd`, a symlink) can lead the loader out of the index directory
INDEX_FILES = (TABLE_FILE, *(f"{name}.npy" for name in SERVING_ARRAYS))
MAX_ITEMS = 2**31 - 1  # neighbours are int32 dense indices
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_VERSION_RE = re.compile(r"[0-9a-f]{16}")


class CorruptIndexError(ValueError):
    """An index directory is missing, partial, corrupt or of an unsupported format (message names the file)."""


def write_index(neighbors: Neighbors, out_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """Write the table, the serving arrays and the manifest atomically (the directory appears whole or not at all).
    `manifest` adds descriptive fields (backbone, config_hash, dataset...); structural fields cannot be overridden."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        table = neighbors.to_table()
        write_parquet(table, tmp / "neighbors.parquet")
        arrays = {
            "item_ids": np.asarray(neighbors.item_ids, np.int64),
            "indptr": np.asarray(neighbors.indptr, np.int64),
            "neighbors": np.asarray(neighbors.neighbors, np.int32),
            "scores": np.asarray(neighbors.scores).astype(np.float32),
        }
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
        files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in sorted(tmp.iterdir())}
        lens = np.diff(arrays["indptr"])
        write_json(
            seal_manifest({
                **manifest,
                "format_version": INDEX_FORMAT_VERSION,
                "index_version": content_version(files),
                "created_unix": time.time(),
                "items": neighbors.n_items,
                "items_with_neighbors": int((lens > 0).sum()),
                "rows": table.num_rows,
                "k": int(lens.max(initial=0)),
                "neighbors_sha256": files["neighbors.parquet"]["sha256"],
                "files": files,
            }),
            tmp / MANIFEST,
        )
    return out_dir


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def manifest_checksum(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON without its `manifest_checksum` field."""
    return hashlib.sha256(_canonical({k: v for k, v in manifest.items() if k != "manifest_checksum"})).hexdigest()


def seal_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """`manifest` as JSON will read it back (NumPy scalars become numbers), with its `manifest_checksum` set."""
    from llm_i2i.io import _json_default

    doc = json.loads(json.dumps(manifest, default=_json_default))
    return {**doc, "manifest_checksum": manifest_checksum(doc)}


def read_neighbors(index_dir: str | Path) -> Neighbors:
    return Neighbors.from_table(pq.read_table(Path(index_dir) / "neighbors.parquet"))


def content_version(files: dict[str, dict[str, Any]]) -> str:
    """A version that names the content: equal data -> equal version, whatever the build time."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}:{files[name]['sha256']}\n".encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class ServingIndex:
    """A loaded, verified index: memory-mapped CSR neighbours plus what `/version` reports."""

    path: Path
    neighbors: Neighbors  # scores are float32 here (as stored); the merge kernels accept either precision
    manifest: dict[str, Any]
    manifest_sha256: str
    id_table: np.ndarray | None = None  # external id -> dense index (-1: unknown) when ids are small ints

    @property
    def version(self) -> str:
        return str(self.manifest["index_version"])

    @property
    def k(self) -> int:
        return int(self.manifest["k"])

    @property
    def n_items(self) -> int:
        return self.neighbors.n_items

    def dense(self, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """External ids -> (dense indices, known mask); unknown ids get index -1."""
        ids = np.asarray(item_ids, np.int64)
        if self.id_table is not None:  # one gather instead of a binary search per id (serving hot path)
            inside = (ids >= 0) & (ids < len(self.id_table))
            idx = self.id_table[np.where(inside, ids, 0)]
            idx[~inside] = -1
            return idx, idx >= 0
        all_ids = self.neighbors.item_ids
        pos = np.searchsorted(all_ids, ids)
        pos_c = np.minimum(pos, max(len(all_ids) - 1, 0))
        known = (pos < len(all_ids)) & (all_ids[pos_c] == ids) if len(all_ids) else np.zeros(len(ids), bool)
        return np.where(known, pos_c, -1).astype(np.int32), known

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "index_version": self.version,
            "manifest_sha256": self.manifest_sha256,
            "format_version": m["format_version"],
            "backbone": m.get("backbone"),
            "config_hash": m.get("config_hash"),
            "items": m["items"],
            "k": m["k"],
            "path": str(self.path),
        }


def load_index(index_dir: str | Path, verify: bool = True) -> ServingIndex:
    """Open the serving arrays memory-mapped. The manifest is always validated in full; `verify` also hashes every
    file (the served arrays through the very mapping they are served from) and checks the CSR invariants. Any failure
    raises `CorruptIndexError` naming the directory, the file and the field."""
    d = Path(index_dir)
    if not d.is_dir():
        raise CorruptIndexError(f"{d}: index directory does not exist")
    raw = _read_file(d, MANIFEST)
    manifest = _validate_manifest(d / MANIFEST, raw)
    arrays = {}
    for name, dtype in SERVING_ARRAYS.items():
        fname = f"{name}.npy"
        buf = _map_file(d, fname)
        if verify:
            _check_bytes(d / fname, buf, manifest["files"][fname])
        arrays[name] = _npy_view(d / fname, buf, dtype)
    if verify:
        table = _read_file(d, TABLE_FILE)
        _check_bytes(d / TABLE_FILE, table, manifest["files"][TABLE_FILE])
    nb = Neighbors(arrays["indptr"], arrays["neighbors"], arrays["scores"], arrays["item_ids"])
    _check_shapes(d, nb, manifest)
    if verify:
        _check_invariants(d, nb)
    return ServingIndex(d, nb, manifest, hashlib.sha256(raw).hexdigest(), _id_table(nb.item_ids))


def manifest_sha256(index_dir: str | Path) -> str:
    """sha256 of an index directory's manifest.json as `ServingIndex.manifest_sha256` records it."""
    return hashlib.sha256(_read_file(Path(index_dir), MANIFEST)).hexdigest()


def _open(d: Path, name: str) -> int:
    """A read-only fd for `d/name`, refusing a symlink (the name itself is one of INDEX_FILES or the manifest)."""
    p = d / name
    try:
        return os.open(p, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        what = "missing manifest (partial or non-index directory)" if name == MANIFEST else \
            "listed in the manifest but missing (partial index directory)"
        raise CorruptIndexError(f"{p}: {what}") from None
    except OSError as e:  # ELOOP for a symlink, EACCES, EISDIR...
        raise CorruptIndexError(f"{p}: cannot be opened as a regular file of the index: {e.strerror}") from None


def _read_file(d: Path, name: str) -> bytes:
    fd = _open(d, name)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    except OSError as e:
        raise CorruptIndexError(f"{d / name}: unreadable: {e}") from None
    finally:
        os.close(fd)


def _map_file(d: Path, name: str) -> mmap.mmap:
    """Map `d/name` read-only from one fd; the caller hashes and serves this mapping, never the path again."""
    fd = _open(d, name)
    try:
        if os.fstat(fd).st_size == 0:
            raise CorruptIndexError(f"{d / name}: empty file (truncated)")
        return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as e:
        raise CorruptIndexError(f"{d / name}: cannot be memory-mapped: {e}") from None
    finally:
        os.close(fd)


def _check_bytes(p: Path, buf: bytes | mmap.mmap, meta: dict[str, Any]) -> None:
    if len(buf) != meta["bytes"]:
        raise CorruptIndexError(f"{p}: {len(buf)} bytes, manifest says {meta['bytes']} (truncated or replaced)")
    if hashlib.sha256(buf).hexdigest() != meta["sha256"]:  # hashlib reads the mapping itself, without a copy
        raise CorruptIndexError(f"{p}: sha256 does not match the manifest (corrupt file)")


def _npy_view(p: Path, buf: mmap.mmap, dtype: np.dtype) -> np.ndarray:
    """The 1-D array of a .npy file as a read-only view of its mapping (never unpickles: object dtypes are refused
    by the dtype check before any data is read)."""
    try:
        buf.seek(0)
        major, _ = np.lib.format.read_magic(buf)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, found = read_header(buf)
    except (ValueError, OSError, SyntaxError, TypeError) as e:
        raise CorruptIndexError(f"{p}: not a readable .npy array: {e}") from None
    if found != dtype or len(shape) != 1:
        raise CorruptIndexError(f"{p}: expected 1-D {dtype}, found {len(shape)}-D {found}")
    offset, count = buf.tell(), shape[0]
    if offset + count * dtype.itemsize != len(buf):
        raise CorruptIndexError(f"{p}: header says {count} values, the file holds {len(buf) - offset} data bytes")
    return np.frombuffer(buf, dtype, count, offset)


def _validate_manifest(mpath: Path, raw: bytes) -> dict[str, Any]:
    """The whole manifest, or `CorruptIndexError` naming the field: JSON object, checksum, format, every structural
    field's type and bounds, the exact file list, and the content version recomputed from the file hashes."""
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CorruptIndexError(f"{mpath}: manifest is not valid JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise CorruptIndexError(f"{mpath}: manifest must be a JSON object")
    fv = manifest.get("format_version")
    if fv != INDEX_FORMAT_VERSION or isinstance(fv, bool):
        raise CorruptIndexError(
            f"{mpath}: format_version {fv!r} is not servable (need {INDEX_FORMAT_VERSION}); rebuild with `llm-i2i index`"
        )
    if manifest.get("manifest_checksum") != manifest_checksum(manifest):
        raise CorruptIndexError(f"{mpath}: manifest_checksum does not match the manifest's content "
                                "(edited or damaged manifest)")
    for field in ("items", "items_with_neighbors", "rows", "k"):
        v = manifest.get(field)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= (MAX_ITEMS if field != "rows" else 2**62):
            raise CorruptIndexError(f"{mpath}: field {field!r} must be a non-negative integer in bounds, got {v!r:.60}")
    for field in ("backbone", "config_hash"):
        if not isinstance(manifest.get(field), (str, type(None))):
            raise CorruptIndexError(f"{mpath}: field {field!r} must be a string, got {manifest[field]!r:.60}")
    files = manifest.get("files")
    if not isinstance(files, dict) or sorted(files) != sorted(INDEX_FILES):
        got = sorted(files) if isinstance(files, dict) else type(files).__name__
        raise CorruptIndexError(f"{mpath}: field 'files' must map exactly {sorted(INDEX_FILES)} to checksums, got {got!s:.200}")
    for name, meta in files.items():
        if (not isinstance(meta, dict) or set(meta) != {"sha256", "bytes"} or not isinstance(meta["sha256"], str)
                or not _SHA256_RE.fullmatch(meta["sha256"]) or isinstance(meta["bytes"], bool)
                or not isinstance(meta["bytes"], int) or meta["bytes"] < 0):
            raise CorruptIndexError(f"{mpath}: files[{name!r}] must be {{\"sha256\": <64 hex>, \"bytes\": <int >= 0>}}")
    version = manifest.get("index_version")
    if not isinstance(version, str) or version != content_version(files):
        raise CorruptIndexError(f"{mpath}: index_version {version!r:.40} is not the content version of the listed files")
    if manifest.get("neighbors_sha256") != files[TABLE_FILE]["sha256"]:
        raise CorruptIndexError(f"{mpath}: neighbors_sha256 differs from files[{TABLE_FILE!r}]")
    return manifest


def _id_table(item_ids: np.ndarray) -> np.ndarray | None:
    """Direct-address table for sorted ids in [0, 4n + 1024) (the usual 1..n numbering), else None."""
    n = len(item_ids)
    if n == 0 or item_ids[0] < 0 or item_ids[-1] >= 4 * n + 1024:
        return None
    table = np.full(int(item_ids[-1]) + 1, -1, np.int32)
    table[item_ids] = np.arange(n, dtype=np.int32)
    return table


def _check_shapes(d: Path, nb: Neighbors, manifest: dict[str, Any]) -> None:
    n, nnz = len(nb.item_ids), len(nb.neighbors)
    if n != manifest["items"]:
        raise CorruptIndexError(f"{d / 'item_ids.npy'}: {n} items, manifest says {manifest['items']}")
    if len(nb.indptr) != n + 1:
        raise CorruptIndexError(f"{d / 'indptr.npy'}: length {len(nb.indptr)}, expected items+1 = {n + 1}")
    if nnz != manifest["rows"] or len(nb.scores) != nnz:
        raise CorruptIndexError(
            f"{d / 'neighbors.npy'} / scores.npy: lengths {nnz} / {len(nb.scores)}, manifest rows {manifest['rows']}"
        )
    if nb.indptr[0] != 0 or nb.indptr[-1] != nnz:
        raise CorruptIndexError(f"{d / 'indptr.npy'}: must start at 0 and end at {nnz}")
    lens = np.diff(nb.indptr)  # O(items): the manifest's K must be the real longest row (a request allocates by k)
    if (lens < 0).any():
        raise CorruptIndexError(f"{d / 'indptr.npy'}: not non-decreasing")
    if int(lens.max(initial=0)) != manifest["k"]:
        raise CorruptIndexError(f"{d / MANIFEST}: k={manifest['k']}, but the longest row holds {int(lens.max(initial=0))}")
    if int((lens > 0).sum()) != manifest["items_with_neighbors"]:
        raise CorruptIndexError(f"{d / MANIFEST}: items_with_neighbors={manifest['items_with_neighbors']}, "
                                f"the rows say {int((lens > 0).sum())}")


def _check_invariants(d: Path, nb: Neighbors) -> None:
    """O(nnz) vectorised checks; they make sure a well-hashed but badly built index cannot crash a replica."""
    n = len(nb.item_ids)
    lens = np.diff(nb.indptr)
    if n > 1 and not (np.diff(nb.item_ids) > 0).all():
        raise CorruptIndexError(f"{d / 'item_ids.npy'}: item ids must be strictly increasing")
    nbrs = np.asarray(nb.neighbors)
    if len(nbrs) and (nbrs.min() < 0 or nbrs.max() >= n):
        raise CorruptIndexError(f"{d / 'neighbors.npy'}: neighbour index out of range [0, {n})")
    if (nbrs == np.repeat(np.arange(n, dtype=np.int64), lens)).any():
        raise CorruptIndexError(f"{d / 'neighbors.npy'}: an item lists itself as its neighbour")
    sc = np.asarray(nb.scores)
    if not np.isfinite(sc).all():
        raise CorruptIndexError(f"{d / 'scores.npy'}: non-finite scores")
    same_row = np.ones(len(sc), bool)
    same_row[nb.indptr[:-1][lens > 0]] = False  # first entry of each row starts a new row
    if len(sc) > 1 and (np.diff(sc) > 0)[same_row[1:]].any():
        raise CorruptIndexError(f"{d / 'scores.npy'}: a row is not sorted by score descending")
