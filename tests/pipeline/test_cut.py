"""Each backbone's own `auto` cut: chosen on its own validation Recall@10, never worse than keep none there, kept
only when the sign test over users says the gain is more than noise; the pipeline trains each backbone on its cut."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_i2i.data import leave_one_out, read_canonical
from llm_i2i.eval.protocol import EvalConfig
from llm_i2i.i2i import make_backbone
from llm_i2i.pipeline.config import STAGES
from llm_i2i.pipeline.cut import OBJECTIVE, choose_between, choose_cuts, paired_gain, pick_cut, validation_metrics
from llm_i2i.pipeline.fuse import FuseConfig
from llm_i2i.pipeline.runner import run_pipeline
from llm_i2i.pipeline.stages import BASELINE, LLM_I2I, load_fused, own_variant
from tests.pipeline.fakes import FakeLLM
from tests.pipeline.test_pipeline import tiny_config

VALID = EvalConfig.from_preset("paper", split="valid")
METRICS = ("recall@10", "ndcg@10", "long_tail_recall@10", "synthetic_kept")


@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=60))
def test_paired_gain_is_the_sign_test(pairs):
    hits = np.array([h for h, _ in pairs], bool)
    none = np.array([n for _, n in pairs], bool)
    got = paired_gain(hits, none)
    gained = sum(h and not n for h, n in pairs)
    lost = sum(n and not h for h, n in pairs)
    assert (got["gained"], got["lost"]) == (gained, lost)
    assert got["z"] == (pytest.approx((gained - lost) / np.sqrt(gained + lost)) if gained + lost else 0.0)
    assert (got["z"] > 0) == (hits.sum() > none.sum())  # a positive z is a higher Recall@10


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8)), min_size=1, max_size=8),
       st.sampled_from([0.0, 1.0, 1.645]))
def test_pick_cut_never_loses_to_keep_none(flips, min_gain_z):
    """Oracle: the first row of max Recall@10 among keep none and the cuts whose z clears the bar."""
    users = 100
    curve = [{"cut": None, OBJECTIVE: 0.5, "gained": 0, "lost": 0, "z": 0.0}]
    for i, (g, l) in enumerate(flips):
        z = (g - l) / np.sqrt(g + l) if g + l else 0.0
        curve.append({"cut": 1.0 - i / 10, OBJECTIVE: 0.5 + (g - l) / users, "gained": g, "lost": l, "z": z})
    got = pick_cut(curve, "bm25", "curve", min_gain_z)
    passing = [curve[0]] + [r for r in curve[1:] if r["z"] > min_gain_z]
    best = max(passing, key=lambda r: r[OBJECTIVE])  # max returns the first of equals: ties keep fewer pairs
    assert got["valid"] is best and got["cut"] == best["cut"] and got["keep_none"] == (best["cut"] is None)
    assert got["valid"][OBJECTIVE] >= got["keep_none_valid"][OBJECTIVE]


class NextItemLLM(FakeLLM):
    """A generator that knows each user's validation item (rank 0; the other ranks random): pairs that help."""

    def generate(self, cfg, ckpt, dataset_dir, out_path):
        stats = super().generate(cfg, ckpt, dataset_dir, out_path)
        split = leave_one_out(read_canonical(dataset_dir).sequences())
        t = pq.read_table(out_path)
        items = t.column("item_id").to_numpy().copy()
        first = t.column("rank").to_numpy() == 0
        items[first] = split.full.item_ids[split.targets("valid")]
        pq.write_table(t.set_column(t.column_names.index("item_id"), "item_id", pa.array(items)), out_path)
        return stats


def _run(tmp_path_factory, name, llm):
    out = tmp_path_factory.mktemp(name)
    run_pipeline(tiny_config(recall_numbers=[], confidence_levels=[], ablations=False, score_real=False),
                 str(out), llm.ops())
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return _run(tmp_path_factory, "random_pairs", FakeLLM())


@pytest.fixture(scope="module")
def helpful_run_dir(tmp_path_factory):
    return _run(tmp_path_factory, "helpful_pairs", NextItemLLM())


def test_each_backbone_gets_its_own_cut(run_dir):
    split = leave_one_out(read_canonical(run_dir / "prepare" / "dataset").sequences())
    cands = pq.read_table(run_dir / "discriminate" / "scored.parquet")
    cfg = FuseConfig(auto_min_gain_z=0.0)
    got = choose_cuts(split, cands, cfg, {"swing": {}, "bm25": {}}, VALID)
    for b, choice in got.items():
        assert choice["backbone"] == b and choice["search"] == "curve" and choice["curve"][0]["cut"] is None
        for row in choice["curve"]:  # oracle: each point is the plain fuse -> fit this backbone -> validation
            assert validation_metrics(split, cands, cfg.resolve(row["cut"]), b, {}, VALID) == \
                {k: row[k] for k in METRICS}
        assert choice["valid"][OBJECTIVE] >= choice["keep_none_valid"][OBJECTIVE]
        assert choose_cuts(split, cands, cfg, {b: {}}, VALID)[b] == choice  # fitted alone: the same choice


def test_choose_between_keeps_a_fit_only_when_it_wins(run_dir):
    split = leave_one_out(read_canonical(run_dir / "prepare" / "dataset").sequences())
    real = make_backbone("swing", None, {}).fit(split.train)
    same = choose_between(split, real, real, 0.5, 10, "bpr", 1.645, VALID)
    assert same["keep_none"] and same["curve"][1]["z"] == 0.0 and same["search"] == "keep_none_or_first"
    # a fit that has seen the validation items wins by far more than noise
    leaky = make_backbone("swing", None, {}).fit(split.train_valid)
    better = choose_between(split, real, leaky, 0.5, 10, "bpr", 1.645, VALID)
    assert not better["keep_none"] and better["cut"] == 0.5 and better["valid"]["synthetic_kept"] == 10
    assert better["valid"]["z"] > 1.645 and better["valid"][OBJECTIVE] > better["keep_none_valid"][OBJECTIVE]
    with pytest.raises(ValueError, match="validation"):
        choose_between(split, real, leaky, 0.5, 10, "bpr", 1.645, EvalConfig.from_preset("paper"))


def _fits(out, b, v):
    return pq.read_table(out / "train_i2i" / b / v / "neighbors.parquet")


@pytest.mark.parametrize("pairs", ["random", "helpful"])
@pytest.mark.parametrize("curve_backbones", [["bm25"], []])
def test_pipeline_trains_each_backbone_on_its_own_cut(run_dir, helpful_run_dir, tmp_path, curve_backbones, pairs):
    """bm25 scored on the whole curve (default) or only on the two fits train_i2i makes anyway: either way its
    LLM-I2I neighbours are those of its own choice, recorded per backbone in report.json."""
    out = tmp_path / "run"
    shutil.copytree(run_dir if pairs == "random" else helpful_run_dir, out)
    cfg = tiny_config(recall_numbers=[], confidence_levels=[], ablations=False, score_real=False,
                      fuse={"auto_curve_backbones": curve_backbones})
    fake = FakeLLM()
    report = run_pipeline(cfg, str(out), fake.ops())
    assert fake.calls["generate"] == fake.calls["discriminate"] == 0  # only fuse onwards re-ran
    per = report["synthetic_pairs"]["cut_per_backbone"]
    assert per["swing"] == report["synthetic_pairs"]["cut"] and per["swing"]["search"] == "curve"
    bm25 = per["bm25"]
    assert bm25["search"] == ("curve" if curve_backbones else "keep_none_or_first")
    assert bm25["valid"][OBJECTIVE] >= bm25["keep_none_valid"][OBJECTIVE]
    fits = json.loads((out / "train_i2i" / "fits.json").read_text())
    fused = json.loads((out / "fuse" / "manifest.json").read_text())["stats"]["variants"]
    if bm25["keep_none"]:  # its own (empty) variant from the fuse stage, or the no-aug fit reused by train_i2i
        assert fits[f"bm25/{LLM_I2I}"]["data"] == (own_variant("bm25") if curve_backbones else BASELINE)
        assert _fits(out, "bm25", LLM_I2I).equals(_fits(out, "bm25", BASELINE))
    else:
        data = fits[f"bm25/{LLM_I2I}"]["data"]
        assert data == (own_variant("bm25") if bm25["cut"] != per["swing"]["cut"] else LLM_I2I)
        assert fused[data]["synthetic"]["kept"] == bm25["valid"]["synthetic_kept"] > 0
        seqs, n_real = load_fused(out / "fuse" / "variants" / data)
        refit = make_backbone("bm25", None, {}).fit(seqs, None, n_real)
        assert _fits(out, "bm25", LLM_I2I).equals(refit.to_table())
    assert (out / "plots" / "cut.png").stat().st_size > 0 and "## Each backbone's own cut" in (out / "report.md").read_text()
    assert set(STAGES) <= set(report["stages"])
