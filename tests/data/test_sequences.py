import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_i2i.data import leave_one_out, long_tail_mask, sequences_from_interactions


def _seqs(lists):
    users, items, ts = [], [], []
    for u, seq in enumerate(lists):
        users += [u] * len(seq)
        items += seq
        ts += list(range(len(seq)))
    return sequences_from_interactions(pa.table({"user_id": users, "item_id": items, "timestamp": ts}))


@given(st.lists(st.lists(st.integers(0, 20), min_size=1, max_size=12), min_size=1, max_size=15), st.integers(-4, 4))
@settings(max_examples=60, deadline=None)
def test_slice_each_matches_python_slicing(lists, stop):
    s = _seqs(lists)
    sliced = s.slice_each(stop=stop)
    for u, seq in enumerate(lists):
        assert s.item_ids[sliced.user(u)].tolist() == seq[:stop]


def test_leave_one_out_targets_and_histories():
    s = _seqs([[1, 2, 3, 4], [5, 6], [7, 8, 9]])
    sp = leave_one_out(s)
    ext = lambda dense: [int(s.item_ids[d]) if d >= 0 else -1 for d in dense]
    assert ext(sp.targets("test")) == [4, -1, 9]
    assert ext(sp.targets("valid")) == [3, -1, 8]
    assert s.item_ids[sp.train.user(0)].tolist() == [1, 2]
    assert s.item_ids[sp.history("test").user(0)].tolist() == [1, 2, 3]
    assert sp.report()["users_not_evaluated_too_short"] == 1


def test_long_tail_is_bottom_fraction_with_deterministic_ties():
    counts = np.array([5, 1, 1, 9, 1, 3, 2, 8, 7, 6])
    mask = long_tail_mask(counts, 0.2)
    assert mask.sum() == 2
    # three items tie at count 1 (indices 1, 2, 4): the higher indices fall in the tail first
    assert np.flatnonzero(mask).tolist() == [2, 4]
    assert long_tail_mask(counts, 0.0).sum() == 0 and long_tail_mask(counts, 1.0).all()


def _marked(rows):
    """(user, item, timestamp, source) rows -> an interaction table with its `source` column."""
    from llm_i2i.data.schema import interaction_table

    u, i, t, s = zip(*rows)
    return interaction_table(list(u), list(i), list(t), source=pa.array(list(s), pa.string()))


def test_real_items_per_user_counts_the_real_prefix():
    from llm_i2i.data.sequences import real_items_per_user

    table = _marked([(7, 1, 0, "real"), (7, 2, 1, "real"), (7, 3, 2, "synthetic"), (3, 4, 5, "real"),
                     (3, 1, 9, "synthetic"), (3, 2, 8, "synthetic"), (5, 2, 0, "real")])
    seqs = sequences_from_interactions(table)
    assert seqs.user_ids.tolist() == [3, 5, 7]
    assert real_items_per_user(table, seqs, "f").tolist() == [1, 1, 2]
    plain = _marked([(1, 1, 0, "real"), (1, 2, 1, "real")])
    assert real_items_per_user(plain, sequences_from_interactions(plain), "f") is None
    no_column = pa.table({"user_id": [1, 1], "item_id": [1, 2], "timestamp": [0, 1]})
    assert real_items_per_user(no_column, sequences_from_interactions(no_column), "f") is None


def test_real_items_per_user_refuses_a_real_row_after_a_synthetic_one():
    import pytest

    from llm_i2i.data import DataError
    from llm_i2i.data.sequences import real_items_per_user

    table = _marked([(1, 1, 0, "real"), (2, 1, 0, "real"), (2, 2, 1, "synthetic"), (2, 3, 2, "real")])
    with pytest.raises(DataError, match=r"fused\.parquet: user 2 has a real interaction after a synthetic one"):
        real_items_per_user(table, sequences_from_interactions(table), "fused.parquet")
