"""Long-tail items: the least popular fraction of the catalogue.

Popularity is counted on the training split only (no peeking at targets). Items are ordered by
(count ascending, dense item index descending) and the first round(fraction * n_items) are long-tail:
among equally rare items, the ones with higher ids — typically added later — fall in the tail first.
Deterministic for a given dataset.
"""

from __future__ import annotations

import numpy as np


def long_tail_mask(item_counts: np.ndarray, fraction: float = 0.2) -> np.ndarray:
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"long-tail fraction must be in [0, 1], got {fraction}")
    n = len(item_counts)
    n_tail = int(round(fraction * n))
    order = np.lexsort((-np.arange(n), item_counts))
    mask = np.zeros(n, dtype=bool)
    mask[order[:n_tail]] = True
    return mask
