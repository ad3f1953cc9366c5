"""Sweep trials select on the validation split only: changing every test item must not move a trial's metric."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from llm_i2i.data import read_canonical, save_dataset
from llm_i2i.pipeline.runner import run_pipeline
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
