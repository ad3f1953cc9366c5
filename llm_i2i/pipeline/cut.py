"""Choices made on VALIDATION Recall@10 only, scored one way (`validation_metrics`): fuse -> fit an I2I
backbone -> evaluate on `split='valid'`; the test split is never looked at.

`choose_cuts` is the fuse stage's `auto` confidence cut, one per backbone: every backbone scores the cuts at
confidence quantiles of the scored candidates, plus "keep none" (real data only), on its own validation Recall@10.
A cut must beat "keep none" by a paired sign test over the validation users (`fuse.auto_min_gain_z` standard
errors; users whose hit flips are the evidence), so a backbone never takes synthetic pairs that lose, or win by
noise, on validation; among the cuts that pass, the best Recall@10 wins and ties go to fewer pairs.
`choose_between` makes the same choice from two fits that already exist (an expensive backbone's "keep none" and
first-backbone-cut fits). The Ray Tune sweep (`tune.py`) scores its trials with `validation_metrics`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llm_i2i.data import LeaveOneOut
from llm_i2i.eval.evaluate import evaluate_topk, recommend_for_split
from llm_i2i.eval.metrics import hit_ranks
from llm_i2i.eval.protocol import EvalConfig
from llm_i2i.i2i import make_backbone
from llm_i2i.i2i.base import Neighbors
from llm_i2i.pipeline.fuse import FuseConfig, Fused, fuse
from llm_i2i.progress import log

OBJECTIVE = "recall@10"
K = 10


def _check_valid(eval_cfg: EvalConfig) -> None:
    if eval_cfg.split != "valid":
        raise ValueError(f"choices are made on the validation split, got eval split {eval_cfg.split!r}")


def score_neighbors(nb: Neighbors, split: LeaveOneOut, eval_cfg: EvalConfig) -> tuple[dict[str, Any], np.ndarray]:
    """Validation metrics of one fit, and which evaluated users hit their target in the top 10 (for the sign test)."""
    _check_valid(eval_cfg)
    topk = recommend_for_split(nb, split, eval_cfg)
    m = evaluate_topk(topk, split, eval_cfg)
    targets = split.targets(eval_cfg.split)
    ranks = hit_ranks(topk, targets)[targets >= 0]
    metrics = {"recall@10": m["recall@10"], "ndcg@10": m["ndcg@10"], "long_tail_recall@10": m["long_tail"]["recall@10"]}
    return metrics, (ranks >= 0) & (ranks < K)


def _fit_and_score(split: LeaveOneOut, fused: Fused, backbone: str, overrides: dict[str, Any],
                   eval_cfg: EvalConfig) -> tuple[dict[str, Any], np.ndarray]:
    _check_valid(eval_cfg)
    model = make_backbone(backbone, None, overrides)
    metrics, hits = score_neighbors(model.fit(fused.sequences, split.targets("valid"), fused.n_real), split, eval_cfg)
    return {**metrics, "synthetic_kept": fused.report["synthetic"]["kept"]}, hits


def validation_metrics(split: LeaveOneOut, candidates: pa.Table | None, fuse_cfg: FuseConfig, backbone: str,
                       overrides: dict[str, Any], eval_cfg: EvalConfig) -> dict[str, Any]:
    """Fuse -> fit `backbone` -> metrics on the validation split (each user's items[-2]; test never read)."""
    _check_valid(eval_cfg)
    return _fit_and_score(split, fuse(split.train, candidates, fuse_cfg), backbone, overrides, eval_cfg)[0]


def candidate_cuts(candidates: pa.Table, kept_fractions: tuple[float, ...]) -> list[float]:
    """Confidence cuts that keep about these fractions of the successfully scored candidates, highest first."""
    ok = pc.is_null(candidates.column("error")) if "error" in candidates.column_names else None
    conf = (candidates.filter(ok) if ok is not None else candidates).column("confidence")
    conf = conf.to_numpy(zero_copy_only=False).astype(np.float64)
    conf = conf[np.isfinite(conf)]
    if not len(conf):
        return []
    cuts = {float(np.quantile(conf, 1.0 - f, method="higher")) for f in kept_fractions}
    return sorted(cuts, reverse=True)


def paired_gain(hits: np.ndarray, none_hits: np.ndarray) -> dict[str, Any]:
    """Sign test of a cut against "keep none" over the same users: users it gains and loses, and
    z = (gained - lost) / sqrt(gained + lost) (0 when no user flips)."""
    gained, lost = int((hits & ~none_hits).sum()), int((none_hits & ~hits).sum())
    return {"gained": gained, "lost": lost, "z": (gained - lost) / float(np.sqrt(gained + lost)) if gained + lost else 0.0}


def pick_cut(curve: list[dict[str, Any]], backbone: str, search: str, min_gain_z: float) -> dict[str, Any]:
    """`curve[0]` is "keep none"; the others in the order ties should go (fewer pairs first)."""
    best = curve[0]
    for row in curve[1:]:
        if row["z"] > min_gain_z and row[OBJECTIVE] > best[OBJECTIVE]:
            best = row
    return {"mode": "auto", "selected_on": "valid", "objective": OBJECTIVE, "backbone": backbone, "search": search,
            "min_gain_z": min_gain_z, "cut": best["cut"], "keep_none": best["cut"] is None, "valid": best,
            "keep_none_valid": curve[0], "curve": curve}


def choose_cuts(split: LeaveOneOut, candidates: pa.Table, fuse_cfg: FuseConfig, backbones: dict[str, dict[str, Any]],
                eval_cfg: EvalConfig) -> dict[str, dict[str, Any]]:
    """The `auto` cut of each backbone (name -> its config overrides) over the whole curve: each candidate training
    set is fused once and every backbone is fitted on it. Returns backbone -> {"cut", "keep_none", "curve", ...}."""
    _check_valid(eval_cfg)
    curves: dict[str, list[dict[str, Any]]] = {b: [] for b in backbones}
    none_hits: dict[str, np.ndarray] = {}
    for cut in [None, *candidate_cuts(candidates, fuse_cfg.auto_kept_fractions)]:  # highest first: ties keep fewer
        fused = fuse(split.train, candidates, fuse_cfg.resolve(cut))
        for b, overrides in backbones.items():
            metrics, hits = _fit_and_score(split, fused, b, overrides, eval_cfg)
            none_hits.setdefault(b, hits)
            row = {"cut": cut, **metrics, **paired_gain(hits, none_hits[b])}
            curves[b].append(row)
            if cut is not None:
                log.info(f"[fuse] auto cut {cut:.4f} ({b}): {row['synthetic_kept']} synthetic kept, valid {OBJECTIVE} "
                         f"{row[OBJECTIVE]:.4f} (keep none: {curves[b][0][OBJECTIVE]:.4f}, z {row['z']:+.2f})")
    return {b: pick_cut(curves[b], b, "curve", fuse_cfg.auto_min_gain_z) for b in backbones}


def choose_between(split: LeaveOneOut, none_fit: Neighbors, cut_fit: Neighbors, cut: float | None, synthetic_kept: int,
                   backbone: str, min_gain_z: float, eval_cfg: EvalConfig) -> dict[str, Any]:
    """The same choice over two existing fits of one backbone: on the real data alone, and at `cut` (another
    backbone's). Costs two validation scorings and no fit."""
    none_metrics, none_hits = score_neighbors(none_fit, split, eval_cfg)
    cut_metrics, cut_hits = score_neighbors(cut_fit, split, eval_cfg)
    curve = [{"cut": None, **none_metrics, "synthetic_kept": 0, **paired_gain(none_hits, none_hits)},
             {"cut": cut, **cut_metrics, "synthetic_kept": synthetic_kept, **paired_gain(cut_hits, none_hits)}]
    return pick_cut(curve, backbone, "keep_none_or_first", min_gain_z)
