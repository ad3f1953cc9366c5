"""fuse() against a plain-Python oracle of the documented rules, on small random inputs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_i2i.config import from_dict
from llm_i2i.data.sequences import Sequences
from llm_i2i.pipeline.fuse import FuseConfig, fuse


def make_train(rng, n_users=6, n_items=9):
    lens = rng.integers(0, 5, n_users)
    indptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    items = rng.integers(0, n_items, indptr[-1]).astype(np.int32)
    return Sequences(np.arange(n_users, dtype=np.int64) * 10 + 3, indptr, items, np.arange(n_items, dtype=np.int64) * 7)


def make_candidates(rng, train, n=30):
    users = rng.choice(np.append(train.user_ids, 999), n)  # 999: unknown user
    items = rng.choice(np.append(train.item_ids, 5), n)  # 5: unknown item
    conf = rng.choice([0.1, 0.6, 0.994, 0.995, 1.0], n)
    err = [None if rng.random() > 0.1 else "boom" for _ in range(n)]
    ranks = rng.integers(0, 6, n)
    # a failed row may carry no item and no rank (nulls), as a failed generation batch writes it
    blank = [e is not None and rng.random() < 0.5 for e in err]
    return pa.table({"user_id": users,
                     "item_id": pa.array([None if b else int(x) for b, x in zip(blank, items)], pa.int64()),
                     "rank": pa.array([None if b else int(x) for b, x in zip(blank, ranks)], pa.int64()),
                     "confidence": conf.astype(np.float32), "error": pa.array(err, pa.string())})


def oracle(train, cands, cfg, real_scores=None):
    """Per-user lists following the module docstring literally."""
    uidx = {u: i for i, u in enumerate(train.user_ids.tolist())}
    iidx = {it: i for i, it in enumerate(train.item_ids.tolist())}
    noisy = set()
    if cfg.filter_real:
        for r in real_scores.to_pylist():
            if r["confidence"] < cfg.real_threshold and r["user_id"] in uidx and r["item_id"] in iidx:
                noisy.add((uidx[r["user_id"]], iidx[r["item_id"]]))
    out = []
    for u in range(train.n_users):
        hist = train.user(u).tolist()
        real = [i for i in hist if (u, i) not in noisy]
        syn = []
        if cfg.add_synthetic:
            rows = [r for r in cands.to_pylist() if uidx.get(r["user_id"]) == u]
            rows = [r for r in rows if r["error"] is None]
            rows = sorted(rows, key=lambda r: r["rank"])  # stable: ties keep input order
            for r in rows:
                i = iidx.get(r["item_id"])
                if r["error"] is not None or i is None:
                    continue
                if cfg.max_rank is not None and r["rank"] >= cfg.max_rank:
                    continue
                if cfg.use_discriminator and r["confidence"] < cfg.threshold:
                    continue
                if i in hist or i in syn:
                    continue
                syn.append(i)
        out.append(real + syn)
    return out


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), use_disc=st.booleans(), n=st.sampled_from([None, 1, 3]),
       filter_real=st.booleans(), threshold=st.sampled_from([0.5, 0.995, 1.0]))
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_fuse_matches_oracle(seed, use_disc, n, filter_real, threshold):
    rng = np.random.default_rng(seed)
    train = make_train(rng)
    cands = make_candidates(rng, train)
    real_u = np.repeat(train.user_ids, train.lengths)
    real_scores = pa.table({"user_id": real_u, "item_id": train.item_ids[train.items],
                            "confidence": rng.random(len(real_u)).astype(np.float32)})
    cfg = FuseConfig(threshold=threshold, use_discriminator=use_disc, max_rank=n, filter_real=filter_real)
    fused = fuse(train, cands, cfg, real_scores)
    want = oracle(train, cands, cfg, real_scores)
    got = [fused.sequences.user(u).tolist() for u in range(train.n_users)]
    assert got == want
    # the counts add up: every generated row is either kept or dropped for exactly one reason
    syn = fused.report["synthetic"]
    assert syn["generated"] == cands.num_rows
    assert syn["kept"] + sum(v for k, v in syn.items() if k.startswith("dropped")) == cands.num_rows
    assert syn["kept"] == sum(len(w) for w in want) - fused.report["real"]["kept"]
    # table view: real rows first per user, then synthetic, positions as timestamps
    t = fused.to_table()
    assert t.num_rows == fused.report["fused_interactions"]
    assert t.column("source").to_pylist().count("synthetic") == syn["kept"]
    assert np.array_equal(fused.sequences.user_ids, train.user_ids)


def test_no_synthetic_is_identity():
    rng = np.random.default_rng(1)
    train = make_train(rng)
    fused = fuse(train, make_candidates(rng, train), FuseConfig(add_synthetic=False))
    assert np.array_equal(fused.sequences.items, train.items)
    assert np.array_equal(fused.sequences.indptr, train.indptr)
    syn = fused.report["synthetic"]
    assert syn["kept"] == 0 and syn["generated"] == syn["dropped_synthetic_off"] > 0


def test_missing_confidence_is_a_clear_error():
    rng = np.random.default_rng(2)
    train = make_train(rng)
    cands = make_candidates(rng, train).drop(["confidence"])
    with pytest.raises(ValueError, match="confidence"):
        fuse(train, cands, FuseConfig(threshold=0.9))
    with pytest.raises(ValueError, match="score_real"):
        fuse(train, None, FuseConfig(threshold=0.9, filter_real=True))


def test_auto_cut_must_be_resolved_before_fusing():
    rng = np.random.default_rng(3)
    train = make_train(rng)
    cands = make_candidates(rng, train)
    with pytest.raises(ValueError, match="auto"):
        fuse(train, cands, FuseConfig())
    auto = FuseConfig()
    assert auto.resolve(0.8) == replace(auto, threshold=0.8)
    assert fuse(train, cands, auto.resolve(None)).report["synthetic"]["kept"] == 0  # "keep none"
    fixed = FuseConfig(threshold=0.7)
    assert fixed.resolve(None) is fixed and fixed.resolve(0.1) is fixed  # a fixed cut is never overridden
    no_disc = FuseConfig(use_discriminator=False)
    assert not no_disc.needs_cut and fuse(train, cands, no_disc).report["synthetic"]["kept"] > 0


def test_config_validation():
    assert from_dict(FuseConfig, {"threshold": "auto"}).threshold == "auto"
    assert from_dict(FuseConfig, {"threshold": 0.9}).threshold == 0.9
    for bad in ("high", 1.5, -0.1):
        with pytest.raises(ValueError, match="threshold"):
            from_dict(FuseConfig, {"threshold": bad})
    with pytest.raises(ValueError, match="auto_kept_fractions"):
        FuseConfig(auto_kept_fractions=(0.0,)).validate()
    with pytest.raises(ValueError, match="max_rank"):
        FuseConfig(max_rank=0).validate()
    with pytest.raises(ValueError, match="auto_curve_backbones.*'lightgcn'"):
        from_dict(FuseConfig, {"auto_curve_backbones": ["bm25", "lightgcn"]})
    with pytest.raises(ValueError, match="auto_min_gain_z"):
        from_dict(FuseConfig, {"auto_min_gain_z": -1.0})
    assert from_dict(FuseConfig, {"auto_curve_backbones": ["bpr"], "auto_min_gain_z": 0}).auto_curve_backbones == ("bpr",)
