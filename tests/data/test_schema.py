import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_i2i.data import DataError, sequences_from_interactions
from llm_i2i.data.schema import INTERACTIONS_SCHEMA, SOURCE_SYNTHETIC, id_column, interaction_table
from tests.conftest import sequences_from_lists


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 6), min_size=1, max_size=6), min_size=1, max_size=6))
def test_sequences_to_interactions_round_trip(histories):
    seqs = sequences_from_lists(histories, n_items=7)
    table = seqs.to_interactions()
    assert table.schema == INTERACTIONS_SCHEMA
    back = sequences_from_interactions(table, seqs.item_ids)
    assert np.array_equal(back.indptr, seqs.indptr) and np.array_equal(back.items, seqs.items)
    assert set(table.column("source").to_pylist()) == {"real"}


def test_interaction_table_takes_per_row_sources_and_noise_labels():
    t = interaction_table([1, 1], [5, 6], [0, 1], pa.array(["real", SOURCE_SYNTHETIC]), is_noise=[False, True])
    assert t.schema.remove(5) == INTERACTIONS_SCHEMA and t.column_names[-1] == "is_noise"
    assert t.column("source").to_pylist() == ["real", "synthetic"]
    assert t.column("weight").to_pylist() == [1.0, 1.0]


@pytest.mark.parametrize(
    "values, match",
    [
        (pa.array([1, None]), r"f: column 'x' row 2: null id"),
        (pa.array([1, -4], pa.int8()), r"f: column 'x' row 2: -4 is negative"),
        (pa.array([2**63], pa.uint64()), r"f: column 'x' row 1: .* is outside int64"),
        (pa.array(["1"]), r"f: column 'x' has type string; ids must be integers"),
    ],
)
def test_id_column_refuses_naming_the_row(values, match):
    with pytest.raises(DataError, match=match):
        id_column(values, "f", "x")


def test_id_column_accepts_every_integer_width():
    assert id_column(pa.array([0, 2**63 - 1], pa.uint64()), "f", "x").to_pylist() == [0, 2**63 - 1]
    assert id_column(pa.chunked_array([[3], [4]], pa.int16()), "f", "x").type == pa.int64()
