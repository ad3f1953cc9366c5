"""Random but valid `Neighbors` for index/service/serve tests."""

from __future__ import annotations

import numpy as np

from llm_i2i.i2i.base import Neighbors


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
