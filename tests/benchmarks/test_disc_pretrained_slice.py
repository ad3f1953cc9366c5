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


def test_keep_measured_carries_rows_and_notes_of_the_same_slice_with_their_provenance_and_refuses_another_slice(
        tmp_path):
    import json

    import pytest

    from benchmarks.disc_pretrained_slice import measured_variants

    path = tmp_path / "slice.json"
    assert measured_variants(path, {}) == ({}, [])  # nothing measured yet
    old = {"dataset": "Beauty", "users": 500, "seed": 0, "epochs": 2, "code_version": "abc1234",
           "started_utc": "2026-12-07T17:39:00Z", "machine": {"cpu": "AMD EPYC"}, "notes": ["shared the cores"],
           "variants": {"scratch": {"auc_random": 0.49},
                        "lora": {"auc_random": 0.5, "code_version": "def5678", "started_utc": "2026-12-08T01:00:00Z"}}}
    path.write_text(json.dumps(old))
    same = {"dataset": "Beauty", "users": 500, "seed": 0, "epochs": 2, "batch_size": 16}
    kept, notes = measured_variants(path, same)
    assert kept["scratch"] == {"code_version": "abc1234", "started_utc": "2026-12-07T17:39:00Z",
                               "machine": {"cpu": "AMD EPYC"}, "auc_random": 0.49}
    assert notes == ["shared the cores"]
    assert kept["lora"]["code_version"] == "def5678"  # a row's own provenance wins over the record's
    with pytest.raises(SystemExit, match="users"):
        measured_variants(path, {**same, "users": 300})


def test_the_page_names_each_rows_cpu_and_carries_the_notes():
    from benchmarks.disc_pretrained_slice import render

    row = {"auc_random": 0.5, "auc_hard": 0.5, "tokens": 100, "train_seconds": 10.0, "tokens_per_s": 10.0,
           "eval_seconds": 1.0, "code_version": "abc1234", "started_utc": "2026-12-07 17:39"}
    record = {"command": "x", "code_version": "def5678", "machine": {"cpu": "Intel Xeon", "cores": 2, "ram_gib": 1,
                                                                     "platform": "p"},
              "started_utc": "2026-12-08 00:19", "dataset": "Beauty", "users": 10, "seed": 0, "epochs": 1,
              "slice_interactions": 90, "slice_items": 50, "full_users": 100, "notes": ["first note", "second"],
              "variants": {"scratch": {**row, "machine": {"cpu": "AMD EPYC"}}, "smollm2_lora": row}}
    page = render(record)
    rows = [ln for ln in page.splitlines() if ln.startswith("| scratch") or ln.startswith("| smollm2_lora")]
    assert rows[0].endswith("`abc1234`, AMD EPYC |") and rows[1].endswith("`abc1234`, Intel Xeon |")
    assert "Note: first note" in page and page.rstrip().endswith("Note: second")
