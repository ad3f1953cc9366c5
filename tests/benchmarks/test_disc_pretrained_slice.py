"""benchmarks/disc_pretrained_slice.py: the slice keeps whole sequences of a seeded subset of users, and the
items they touch with their text."""

import numpy as np
import pyarrow.compute as pc

from benchmarks.disc_pretrained_slice import user_slice
from llm_i2i.data import load_dataset


def test_a_slice_keeps_whole_sequences_of_a_seeded_user_subset():
    ds = load_dataset("default", n_users=200, n_items=80)
    part = user_slice(ds, 50, seed=3)
    users = np.unique(part.interactions.column("user_id").to_numpy())
    assert len(users) == 50 and set(users) <= set(ds.interactions.column("user_id").to_numpy())
    for u in users[:10]:  # every interaction of a chosen user, none dropped
        mine = pc.equal(ds.interactions.column("user_id"), u)
        assert ds.interactions.filter(mine).equals(part.interactions.filter(pc.equal(part.interactions.column("user_id"), u)))
    used = set(part.interactions.column("item_id").to_pylist())
    assert set(part.items.column("item_id").to_pylist()) == used
    assert part.items.schema == ds.items.schema  # titles and metadata travel with the items
    again = user_slice(ds, 50, seed=3)
    assert again.interactions.equals(part.interactions)
    assert not user_slice(ds, 50, seed=4).interactions.equals(part.interactions)


def test_keep_measured_carries_rows_of_the_same_slice_with_their_provenance_and_refuses_another_slice(tmp_path):
    import json

    import pytest

    from benchmarks.disc_pretrained_slice import measured_variants

    path = tmp_path / "slice.json"
    assert measured_variants(path, {}) == {}  # nothing measured yet
    old = {"dataset": "Beauty", "users": 500, "seed": 0, "epochs": 2, "code_version": "abc1234",
           "started_utc": "2026-12-07T17:39:00Z",
           "variants": {"scratch": {"auc_random": 0.49},
                        "lora": {"auc_random": 0.5, "code_version": "def5678", "started_utc": "2026-12-08T01:00:00Z"}}}
    path.write_text(json.dumps(old))
    same = {"dataset": "Beauty", "users": 500, "seed": 0, "epochs": 2, "batch_size": 16}
    kept = measured_variants(path, same)
    assert kept["scratch"] == {"code_version": "abc1234", "started_utc": "2026-12-07T17:39:00Z", "auc_random": 0.49}
    assert kept["lora"]["code_version"] == "def5678"  # a row's own provenance wins over the record's
    with pytest.raises(SystemExit, match="users"):
        measured_variants(path, {**same, "users": 300})
