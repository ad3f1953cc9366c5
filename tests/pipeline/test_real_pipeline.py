"""The real pipeline end to end, no fakes: `real_llm_ops` (SFT of two tiny models, in-process HF inference),
the real candidate and scored tables, the I2I fit, the index, and a served `/recommend` answer.

The synthetic data has users too short for a train split, so the generator's table carries error rows (null
item_id and rank) and the discriminator's null confidences, which fuse must skip; the index is then served by the
in-process `IndexService` and must answer exactly what `recommend_batch` (the offline evaluation) ranks under the
serving preset, and the metrics the pipeline reported must be those of the served answers.
"""

from __future__ import annotations

import json

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llm_i2i.config import from_dict
from llm_i2i.data import leave_one_out, read_canonical
from llm_i2i.kernels.merge import recommend_batch
from llm_i2i.eval.protocol import EvalConfig
from llm_i2i.index.service import IndexService, ServeConfig
from llm_i2i.pipeline.artifacts import ArtifactStore
from llm_i2i.llm.runners import Runners
from llm_i2i.pipeline.config import STAGES, PipelineConfig
from llm_i2i.pipeline.runner import run_pipeline
from llm_i2i.pipeline.stages import read_fit, real_llm_ops
from ray_jobs.batch_inference import map_with_engine

TINY_MODEL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "vocab_size": 200}
CONFIG = {
    "synthetic": {"n_users": 120, "n_items": 50, "n_groups": 4, "min_length": 1, "mean_extra_length": 3.0, "seed": 3},
    "backbones": ["swing"],
    "sft_generator": {"epochs": 1, "batch_size": 32, "eval_users": 40, "threads": 1, "model": TINY_MODEL},
    "sft_discriminator": {"epochs": 1, "batch_size": 32, "eval_users": 40, "threads": 1},
    "generate": {"recall_number": 3, "num_actors": 0, "batch_size": 64, "torch_threads": 1},
    "discriminate": {"num_actors": 0, "batch_size": 128, "torch_threads": 1},
    "score_real": False,
    "fuse": {"threshold": 0.0},  # every scored synthetic pair: the tiny model's confidences are not the point
    "ablations": False,
    "eval_preset": "serving",
    "eval_overrides": {"ks": [5, 10]},
    "llm_eval_max_users": 30,
}

LOCAL = Runners(batch_inference=map_with_engine)  # SFT in this process, inference as the config says


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("real")
    report = run_pipeline(from_dict(PipelineConfig, CONFIG), str(out), real_llm_ops(LOCAL))
    return out, report


def test_every_stage_ran_on_the_real_ops(run):
    out, report = run
    assert {s: v["status_this_run"] for s, v in report["stages"].items()} == {s: "ran" for s in STAGES}
    for role in ("generator", "discriminator"):
        assert (out / f"sft_{role}" / "model" / "model.safetensors").exists()


def test_real_candidate_tables_carry_error_rows_and_nulls_through_fuse(run):
    out, _ = run
    cands = pq.read_table(out / "generate" / "candidates.parquet")
    assert cands.schema.field("rank").type == pa.int32()
    err = np.array([e is not None for e in cands["error"].to_pylist()])
    assert err.any() and not err.all()
    assert cands.filter(pa.array(err))["item_id"].null_count == int(err.sum())
    scored = pq.read_table(out / "discriminate" / "scored.parquet")
    conf = scored["confidence"].to_numpy(zero_copy_only=False)
    assert np.isnan(conf).sum() == len(scored["error"].drop_null()) >= err.sum()
    fuse = json.loads((out / "fuse" / "manifest.json").read_text())["stats"]["variants"]["llm_i2i"]
    kept = fuse["synthetic"]["kept"]
    assert kept == int((~np.isnan(conf)).sum()) > 0  # threshold 0: every scored pair, none of the failed ones
    assert json.loads((out / "generate" / "manifest.json").read_text())["stats"]["error_rows"] == int(err.sum())


def test_served_recommend_equals_recommend_batch_under_the_serving_preset(run):
    out, _ = run
    preset = EvalConfig.from_preset("serving", ks=(5, 10))
    svc = IndexService(ServeConfig(index_dir=str(out / "build_index" / "index"), max_recent=preset.num_triggers,
                                   merge=preset.merge, unknown_items="skip"))
    split = leave_one_out(read_canonical(out / "prepare" / "dataset").sequences())
    hist, targets = split.history("test"), split.targets("test")
    nb = read_fit(ArtifactStore(str(out)).get("train_i2i"), "swing", "llm_i2i", split.full.item_ids)
    want, want_sc = recommend_batch(nb, hist.indptr, hist.items, num_triggers=preset.num_triggers, k=preset.max_k,
                                    how=preset.merge, mask_history=preset.mask_history)
    hits, evaluated = 0, 0
    for u in range(hist.n_users):
        seq = hist.user(u)
        if targets[u] < 0 or not len(seq):
            continue
        body = json.dumps({"recent_items": hist.item_ids[seq].tolist(), "k": preset.max_k}).encode()
        status, payload = svc.handle_http("POST", "/recommend", {}, {}, body)
        assert status == 200, payload
        got = orjson.loads(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY))  # the bytes serve_apps sends
        row = want[u][want[u] >= 0]
        assert got["items"] == split.full.item_ids[row].tolist()
        np.testing.assert_allclose(got["scores"], want_sc[u][: len(row)], rtol=1e-6)
        hits += int(split.full.item_ids[targets[u]] in got["items"])
        evaluated += 1
    metrics = json.loads((out / "evaluate" / "metrics.json").read_text())["fits"]["swing/llm_i2i"]
    assert evaluated == metrics["users_evaluated"]
    assert hits > 0 and hits / evaluated == pytest.approx(metrics[f"recall@{preset.max_k}"])


def test_discriminator_block_on_the_real_ops(run):
    """The real scorer's random-negative pairs give the contract's `discriminator_auc`; the hard ones and the
    generator's candidates (failed rows counted, never scored) are reported beside it."""
    out, report = run
    d = report["discriminator"]
    assert d["auc"]["random"] == report["discriminator_auc"] and 0.0 <= d["auc"]["hard"] <= 1.0
    assert d["pairs"]["random"] == d["pairs"]["hard"] == 2 * CONFIG["llm_eval_max_users"]
    scored = pq.read_table(out / "discriminate" / "scored.parquet")
    c = d["pairs"]["candidates"]
    assert c["candidates"] == scored.num_rows and c["not_scored"] == len(scored["error"].drop_null()) > 0
    assert c["pairs"] + c["user_not_evaluated"] == scored.num_rows - c["not_scored"]
    assert d["kept_precision"]["generated"]["pairs"] == c["pairs"] >= d["kept_precision"]["kept"]["pairs"]
