"""The generate stage with the real batch-inference path (in-process engine): an error budget, not a cached failure."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.compute as pc
import pytest

from llm_i2i.data import load_dataset, save_dataset
from llm_i2i.pipeline.runner import run_pipeline
from llm_i2i.llm.runners import Runners
from llm_i2i.pipeline.stages import real_llm_ops
from ray_jobs.batch_inference import map_with_engine
from ray_jobs.batch_inference import ErrorBudgetExceeded
from tests.llm.conftest import items, tiny_model, tokenizer  # noqa: F401 - session fixtures the world is built from
from tests.llm.test_inference import world  # noqa: F401
from tests.pipeline.fakes import FakeLLM
from tests.pipeline.test_pipeline import tiny_config


def _config(data, ckpt, **generate):
    return tiny_config(data=str(data), generator_checkpoint=ckpt, backbones=["swing"], ablations=False,
                       recall_numbers=[], confidence_levels=[], generate={"recall_number": 2, "num_actors": 0, **generate})


def _ops():
    ops = FakeLLM().ops()
    ops.generate = real_llm_ops(Runners(batch_inference=map_with_engine)).generate
    return ops


def test_generate_past_the_error_budget_fails_and_is_not_committed(world, tmp_path):  # noqa: F811
    """A checkpoint that knows none of the data's items: every user errors. The stage fails naming the counts,
    writes nothing, and a rerun tries again instead of finding a cached 'finished' stage."""
    ckpt, data = world
    ds = load_dataset(data)
    shifted = type(ds)("shifted", ds.interactions.set_column(1, "item_id", pc.add(ds.interactions["item_id"], 1000)),
                       ds.items.set_column(0, "item_id", pc.add(ds.items["item_id"], 1000)), {})
    save_dataset(shifted, tmp_path / "shifted")
    out = tmp_path / "run"
    users = int(np.unique(ds.interactions["user_id"].to_numpy()).size)
    for _ in range(2):
        with pytest.raises(ErrorBudgetExceeded, match=rf"{users} of {users} users errored.*max_error_fraction=0.5"):
            run_pipeline(_config(tmp_path / "shifted", ckpt), str(out), _ops(), until="generate")
        assert not (out / "generate").exists() and not list(out.glob(".generate.*"))
        assert (out / "sft_generator" / "manifest.json").exists()


def test_errors_within_the_budget_are_committed_with_their_counts(world, tmp_path):  # noqa: F811
    """Users too short for a train split are error rows; under the default budget the stage commits and its
    manifest carries the counts; a budget below their share fails the stage."""
    ckpt, data = world
    lengths = np.unique(load_dataset(data).interactions["user_id"].to_numpy(), return_counts=True)[1]
    short = int((lengths < 3).sum())
    assert 0 < short / len(lengths) < 0.5
    run_pipeline(_config(data, ckpt), str(tmp_path / "ok"), _ops(), until="generate")
    stats = json.loads((tmp_path / "ok" / "generate" / "manifest.json").read_text())["stats"]
    assert stats["error_rows"] == short and stats["errors_by_kind"] == {"empty history": short}
    with pytest.raises(ErrorBudgetExceeded, match=f"{short} of {len(lengths)} users errored"):
        run_pipeline(_config(data, ckpt, max_error_fraction=short / len(lengths) / 2), str(tmp_path / "strict"),
                     _ops(), until="generate")
    assert not (tmp_path / "strict" / "generate").exists()
