"""Sweep trials select on the validation split only: changing every test item must not move a trial's metric."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import pyarrow.parquet as pq

from llm_i2i.data import leave_one_out, read_canonical, save_dataset
from llm_i2i.eval.protocol import EvalConfig
from llm_i2i.pipeline.fuse import FuseConfig
from llm_i2i.pipeline.runner import run_pipeline
from llm_i2i.pipeline.cut import choose_cuts, validation_metrics
from llm_i2i.pipeline.tune import SweepConfig, summarize, trial_metrics
from tests.pipeline.fakes import FakeLLM
from tests.pipeline.test_pipeline import tiny_config

PARAMS = {"generator": "run", "threshold": 0.99, "recall_number": 3, "swing_alpha1": 5.0, "swing_alpha2": 0.0,
          "swing_beta": 0.3}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tune_run")
    cfg = tiny_config(backbones=["swing"], ablations=False, recall_numbers=[], confidence_levels=[], score_real=False)
    run_pipeline(cfg, str(out), FakeLLM().ops(), until="discriminate")
    return out


def _with_test_items_replaced(ds_dir, dest):
    """Same dataset, but each user's last (test) item swapped for another item."""
    ds = read_canonical(ds_dir)
    t = ds.interactions
    order = np.lexsort((t.column("timestamp").to_numpy(), t.column("user_id").to_numpy()))
    t = t.take(order)
    users = t.column("user_id").to_numpy()
    last = np.append(users[1:] != users[:-1], True)
    items = t.column("item_id").to_numpy().copy()
    catalogue = np.unique(items)
    items[last] = catalogue[(np.searchsorted(catalogue, items[last]) + 1) % len(catalogue)]
    t = t.set_column(t.column_names.index("item_id"), "item_id", pa.array(items, pa.int64()))
    save_dataset(type(ds)(ds.name, t, ds.items, ds.report), dest)
    assert not pc.all(pc.equal(t.column("item_id"), read_canonical(ds_dir).interactions.take(order).column("item_id"))).as_py()
    return dest


def test_trial_never_looks_at_the_test_split(run_dir, tmp_path):
    ds_dir = run_dir / "prepare" / "dataset"
    scored = str(run_dir / "discriminate" / "scored.parquet")
    a = trial_metrics(PARAMS, str(ds_dir), scored)
    b = trial_metrics(PARAMS, str(_with_test_items_replaced(ds_dir, tmp_path / "ds")), scored)
    assert a == b and a["synthetic_kept"] > 0
    # ...while the validation items do matter (the metric is not constant)
    c = trial_metrics({**PARAMS, "threshold": 0.0, "recall_number": 4}, str(ds_dir), scored)
    assert c["synthetic_kept"] > a["synthetic_kept"]


VALID = EvalConfig.from_preset("paper", split="valid")


def _cut(ds_dir, candidates, fuse_cfg=FuseConfig()):
    return choose_cuts(leave_one_out(read_canonical(ds_dir).sequences()), candidates, fuse_cfg, {"swing": {}}, VALID)["swing"]


def test_auto_cut_is_the_best_validation_point_and_never_reads_test(run_dir, tmp_path):
    ds_dir = run_dir / "prepare" / "dataset"
    cands = pq.read_table(run_dir / "discriminate" / "scored.parquet")
    got = _cut(ds_dir, cands)
    assert got["selected_on"] == "valid" and got["curve"][0]["cut"] is None  # "keep none" is always a candidate
    # oracle: every curve point is the plain fuse -> Swing -> validation metric at that cut ...
    split = leave_one_out(read_canonical(ds_dir).sequences())
    for row in got["curve"]:
        assert validation_metrics(split, cands, FuseConfig().resolve(row["cut"]), "swing", {}, VALID) == \
            {k: v for k, v in row.items() if k not in ("cut", "gained", "lost", "z")}
    # ... and the choice is the first best of keep none and the cuts that pass the sign test (keep none first,
    # then the highest cut: ties keep fewer pairs)
    passing = [got["curve"][0]] + [r for r in got["curve"][1:] if r["z"] > FuseConfig().auto_min_gain_z]
    best = max(passing, key=lambda r: r["recall@10"])
    assert got["cut"] == best["cut"] and got["keep_none"] == (best["cut"] is None)
    assert _cut(_with_test_items_replaced(ds_dir, tmp_path / "ds"), cands) == got


def test_auto_cut_keeps_none_when_no_cut_helps(run_dir):
    """Candidates the user already has add nothing at any cut: "keep none" must win the tie."""
    ds_dir = run_dir / "prepare" / "dataset"
    train = leave_one_out(read_canonical(ds_dir).sequences()).train
    users = np.repeat(train.user_ids, train.lengths)
    cands = pa.table({"user_id": users, "item_id": train.item_ids[train.items],
                      "rank": np.zeros(len(users), np.int32), "confidence": np.linspace(0, 1, len(users))})
    got = _cut(ds_dir, cands)
    assert got["keep_none"] and got["cut"] is None and len(got["curve"]) > 2
    assert all(r["synthetic_kept"] == 0 for r in got["curve"])


def test_validation_metrics_refuse_the_test_split(run_dir):
    split = leave_one_out(read_canonical(run_dir / "prepare" / "dataset").sequences())
    with pytest.raises(ValueError, match="validation"):
        validation_metrics(split, None, FuseConfig(add_synthetic=False), "swing", {}, EvalConfig.from_preset("paper"))


def test_grid_and_summary():
    sweep = SweepConfig(thresholds=(0.5, 0.99), recall_numbers=(5,), swing_beta=(0.0, 0.3))
    grid = sweep.grid(["a4", "a1"])
    assert len(grid) == 2 * 2 * 1 * 2 and {g["generator"] for g in grid} == {"a4", "a1"}
    rows = [{**g, "recall@10": float(i), "ndcg@10": 0.0, "long_tail_recall@10": 0.0, "synthetic_kept": 1}
            for i, g in enumerate(grid)]
    table, best = summarize(rows)
    assert best["recall@10"] == len(grid) - 1 and table.count("\n") == len(grid) + 1


@pytest.mark.slow
@pytest.mark.ray
def test_tune_sweep_job(run_dir, tmp_path):
    from ray_jobs.tune_sweep import main

    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(f"pipeline_out: {run_dir}\nthresholds: [0.5, 0.99]\nrecall_numbers: [2, 4]\ncpus_per_trial: 0.5\n")
    assert main(["--config", str(cfg), "--out", str(tmp_path / "sweep")]) == 0
    best = json.loads((tmp_path / "sweep" / "best.json").read_text())
    assert best["trials"] == 4 and best["failed_trials"] == 0
    direct = trial_metrics({**PARAMS, **{k: best["best"][k] for k in ("threshold", "recall_number")},
                            "swing_alpha1": 15.0}, str(run_dir / "prepare" / "dataset"),
                           str(run_dir / "discriminate" / "scored.parquet"))
    assert direct["recall@10"] == pytest.approx(best["best"]["recall@10"])
