"""The I2I index on disk, one self-contained directory:

- `neighbors.parquet` (item_id, neighbor_id, score, rank): the portable table for analysis and joins;
- `item_ids.npy` (int64, sorted), `indptr.npy` (int64), `neighbors.npy` (int32 dense indices), `scores.npy`
  (float32): the serving layout, opened with `mmap_mode='r'` so replicas share pages and load in milliseconds;
- `manifest.json`: format version, content version, backbone, config hash, item count, K and the sha256 of
  every file. `load_index(verify=True)` re-hashes the files and checks the CSR invariants, so a corrupt or
  half-copied directory is refused with an error naming the bad file instead of serving garbage.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from llm_i2i.i2i.base import Neighbors
from llm_i2i.io import atomic_dir, sha256_file, write_json, write_parquet

INDEX_FORMAT_VERSION = 2
MANIFEST = "manifest.json"
# serving array name -> dtype; the file is `<name>.npy`
SERVING_ARRAYS: dict[str, np.dtype] = {
    "item_ids": np.dtype(np.int64),
    "indptr": np.dtype(np.int64),
    "neighbors": np.dtype(np.int32),
    "scores": np.dtype(np.float32),
}


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
            {
                **manifest,
                "format_version": INDEX_FORMAT_VERSION,
                "index_version": _content_version(files),
                "created_unix": time.time(),
                "items": neighbors.n_items,
                "items_with_neighbors": int((lens > 0).sum()),
                "rows": table.num_rows,
                "k": int(lens.max(initial=0)),
                "neighbors_sha256": files["neighbors.parquet"]["sha256"],
                "files": files,
            },
            tmp / MANIFEST,
        )
    return out_dir


def read_neighbors(index_dir: str | Path) -> Neighbors:
    return Neighbors.from_table(pq.read_table(Path(index_dir) / "neighbors.parquet"))


def _content_version(files: dict[str, dict[str, Any]]) -> str:
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
    """Open the serving arrays memory-mapped. `verify` re-hashes every file against the manifest and checks
    shapes, dtypes and CSR invariants; any failure raises `CorruptIndexError` naming the directory and file."""
    d = Path(index_dir)
    if not d.is_dir():
        raise CorruptIndexError(f"{d}: index directory does not exist")
    mpath = d / MANIFEST
    if not mpath.is_file():
        raise CorruptIndexError(f"{mpath}: missing manifest (partial or non-index directory)")
    try:
        manifest = json.loads(mpath.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptIndexError(f"{mpath}: manifest is not valid JSON: {e}") from e
    if not isinstance(manifest, dict):
        raise CorruptIndexError(f"{mpath}: manifest must be a JSON object")
    fv = manifest.get("format_version")
    if fv != INDEX_FORMAT_VERSION:
        raise CorruptIndexError(
            f"{mpath}: format_version {fv!r} is not servable (need {INDEX_FORMAT_VERSION}); rebuild with `llm-i2i index`"
        )
    for field in ("index_version", "items", "rows", "k", "files"):
        if field not in manifest:
            raise CorruptIndexError(f"{mpath}: manifest lacks field {field!r}")
    files = manifest["files"]
    for name in [f"{a}.npy" for a in SERVING_ARRAYS]:
        if name not in files:
            raise CorruptIndexError(f"{mpath}: manifest lists no checksum for {name}")
    if verify:
        for name, meta in files.items():
            p = d / name
            if not p.is_file():
                raise CorruptIndexError(f"{p}: listed in the manifest but missing (partial index directory)")
            size = p.stat().st_size
            if size != meta.get("bytes"):
                raise CorruptIndexError(f"{p}: {size} bytes, manifest says {meta.get('bytes')} (truncated or replaced)")
            if sha256_file(p) != meta.get("sha256"):
                raise CorruptIndexError(f"{p}: sha256 does not match the manifest (corrupt file)")
    arrays = {}
    for name, dtype in SERVING_ARRAYS.items():
        p = d / f"{name}.npy"
        try:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise CorruptIndexError(f"{p}: not a readable .npy array: {e}") from e
        if arr.dtype != dtype or arr.ndim != 1:
            raise CorruptIndexError(f"{p}: expected 1-D {dtype}, found {arr.ndim}-D {arr.dtype}")
        arrays[name] = np.asarray(arr)  # a plain ndarray view of the mapping: memmap's subclass hooks cost per slice
    nb = Neighbors(arrays["indptr"], arrays["neighbors"], arrays["scores"], arrays["item_ids"])
    _check_shapes(d, nb, manifest)
    if verify:
        _check_invariants(d, nb)
    return ServingIndex(d, nb, manifest, sha256_file(mpath), _id_table(nb.item_ids))


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


def _check_invariants(d: Path, nb: Neighbors) -> None:
    """O(nnz) vectorised checks; they make sure a well-hashed but badly built index cannot crash a replica."""
    n = len(nb.item_ids)
    lens = np.diff(nb.indptr)
    if (lens < 0).any():
        raise CorruptIndexError(f"{d / 'indptr.npy'}: not non-decreasing")
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
