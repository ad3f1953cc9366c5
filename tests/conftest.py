"""Shared, generic test fixtures (keep small; area-specific fixtures live beside their tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llm_i2i.data.sequences import Sequences

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def sequences_from_lists(histories: list[list[int]], n_items: int | None = None) -> Sequences:
    """Users' dense item lists (oldest first) -> Sequences; item ids are 100 + dense index so tests
    notice when external and dense ids get mixed up."""
    n_items = n_items if n_items is not None else 1 + max((max(h) for h in histories if h), default=-1)
    indptr = np.zeros(len(histories) + 1, np.int64)
    np.cumsum([len(h) for h in histories], out=indptr[1:])
    items = np.array([i for h in histories for i in h], np.int32)
    return Sequences(
        user_ids=np.arange(len(histories), dtype=np.int64) + 1,
        indptr=indptr,
        items=items,
        item_ids=np.arange(n_items, dtype=np.int64) + 100,
    )


@pytest.fixture
def make_sequences():
    """Builder fixture: `make_sequences([[0, 1], [1, 2]], n_items=4)`."""
    return sequences_from_lists


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture
def shared_data_dir() -> Path:
    """`../shared/data` relative to the repo root; tests that need it skip cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available at {SHARED_DATA}")
    return SHARED_DATA
