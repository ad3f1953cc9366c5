"""Random but valid `Neighbors` for index/service/serve tests, and the ways an index directory gets broken."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from llm_i2i.i2i.base import Neighbors
from llm_i2i.index.store import MANIFEST, seal_manifest


def random_neighbors(seed: int, n_items: int = 50, k: int = 8, empty_frac: float = 0.1, id_seed: int | None = None) -> Neighbors:
    """Each item gets up to k distinct neighbours (never itself), scores sorted descending with ties by index;
    a few items get none; scores include ties and are exact in float32 (multiples of 1/8). Indexes built with
    the same `id_seed` (default: `seed`) share their item vocabulary."""
    id_rng = np.random.default_rng(seed if id_seed is None else id_seed)
    item_ids = np.sort(id_rng.choice(10**6, size=n_items, replace=False)).astype(np.int64) - 500
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_items):
        m = 0 if rng.random() < empty_frac else int(rng.integers(1, min(k, n_items - 1) + 1))
        cand = rng.choice(np.delete(np.arange(n_items), i), size=m, replace=False)
        sc = rng.integers(1, 40, size=m) / 8.0
        order = np.lexsort((cand, -sc))
        rows.append((cand[order], sc[order]))
    return Neighbors.from_rows(rows, item_ids)


def edit_manifest(index_dir: Path, change: Callable[[dict[str, Any]], Any], seal: bool = True) -> None:
    """Apply `change` to an index's manifest in place; `seal` recomputes manifest_checksum, as a buggy or hostile
    writer would, so that only the schema/content checks can catch the edit."""
    path = Path(index_dir) / MANIFEST
    m = json.loads(path.read_text())
    change(m)
    path.write_text(json.dumps(seal_manifest(m) if seal else m))


def _truncate(d: Path) -> None:
    raw = (d / "neighbors.npy").read_bytes()
    (d / "neighbors.npy").write_bytes(raw[:-8])


# name -> how to break a freshly written index; every one must be refused by load_index with the given message
BROKEN_INDEXES: dict[str, tuple[Callable[[Path], Any], str]] = {
    "k_as_text": (lambda d: edit_manifest(d, lambda m: m.update(k="eight")), "'k' must be a non-negative integer"),
    "k_huge": (lambda d: edit_manifest(d, lambda m: m.update(k=2**40)), "'k' must be a non-negative integer"),
    "k_above_rows": (lambda d: edit_manifest(d, lambda m: m.update(k=m["k"] + 1)), "longest row holds"),
    "files_as_list": (lambda d: edit_manifest(d, lambda m: m.update(files=sorted(m["files"]))), "field 'files'"),
    "file_not_listed": (lambda d: edit_manifest(d, lambda m: m["files"].pop("neighbors.npy")), "field 'files'"),
    "file_outside_dir": (lambda d: edit_manifest(d, lambda m: m["files"].update({"../a/scores.npy": m["files"]["scores.npy"]})),
                         "field 'files'"),
    "unsealed_edit": (lambda d: edit_manifest(d, lambda m: m.update(backbone="other"), seal=False), "manifest_checksum"),
    "truncated_file": (_truncate, r"neighbors\.npy.*bytes"),
}
