"""The minimal mark-and-scan kernel the Swing benchmark measures against computes the same thing as the
library's kernel: same neighbours, bit-identical scores (both sum a score's pairs in (a, b) order)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.swing_reference import swing_mark_scan
from llm_i2i.i2i.swing import SwingConfig, build_graph, swing_topk
from tests.i2i.test_swing import _seqs, skewed_rows


@given(st.integers(0, 10_000), st.sampled_from([(6, 10), (1000, 1000)]), st.integers(1, 30))
@settings(max_examples=25, deadline=None)
def test_reference_kernel_equals_library_kernel(seed, caps, k):
    seqs = _seqs(skewed_rows(seed, n_users=120, n_items=60, max_len=40))
    g = build_graph(seqs, SwingConfig(k=k, max_users_per_item=caps[0], max_items_per_user=caps[1]))
    idx, sc, _ = swing_topk(g, k, 0.0)
    ref = swing_mark_scan(g, k, 0.0, n_threads=2)
    np.testing.assert_array_equal(ref["idx"], idx)
    np.testing.assert_array_equal(ref["scores"], sc)
    n_i = np.diff(g.item_indptr)
    assert ref["user_pairs"] == int((n_i * (n_i - 1) // 2).sum())
