"""Choices made on VALIDATION Recall@10 only, scored one way (`validation_metrics`): fuse -> fit an I2I
backbone -> evaluate on `split='valid'`; the test split is never looked at.

`choose_cut` is the fuse stage's `auto` confidence cut: cuts at confidence quantiles of the scored candidates,
plus "keep none"; the best validation Recall@10 wins, ties go to fewer synthetic pairs, and "keep none" wins
unless a cut beats it. The Ray Tune sweep (`tune.py`) scores its trials with the same function.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llm_i2i.data import LeaveOneOut
from llm_i2i.eval.evaluate import evaluate_neighbors
from llm_i2i.eval.protocol import EvalConfig
from llm_i2i.i2i import make_backbone
from llm_i2i.pipeline.fuse import FuseConfig, fuse
from llm_i2i.progress import log

OBJECTIVE = "recall@10"


def validation_metrics(split: LeaveOneOut, candidates: pa.Table | None, fuse_cfg: FuseConfig, backbone: str,
                       overrides: dict[str, Any], eval_cfg: EvalConfig) -> dict[str, Any]:
    """Fuse -> fit `backbone` -> metrics on the validation split (each user's items[-2]; test never read)."""
    if eval_cfg.split != "valid":
        raise ValueError(f"choices are made on the validation split, got eval split {eval_cfg.split!r}")
    fused = fuse(split.train, candidates, fuse_cfg)
    model = make_backbone(backbone, None, overrides)
    m = evaluate_neighbors(model.fit(fused.sequences, split.targets("valid")), split, eval_cfg)
    return {"recall@10": m["recall@10"], "ndcg@10": m["ndcg@10"], "long_tail_recall@10": m["long_tail"]["recall@10"],
            "synthetic_kept": fused.report["synthetic"]["kept"]}


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


def choose_cut(split: LeaveOneOut, candidates: pa.Table, fuse_cfg: FuseConfig, backbone: str,
               overrides: dict[str, Any], eval_cfg: EvalConfig) -> dict[str, Any]:
    """The `auto` confidence cut: the best validation Recall@10 over `candidate_cuts`, or "keep none" (cut None)
    when no cut beats the real data alone. Returns {"cut", "keep_none", "curve", ...} for the report."""
    def score(cfg: FuseConfig) -> dict[str, Any]:
        return validation_metrics(split, candidates, cfg, backbone, overrides, eval_cfg)

    none = score(fuse_cfg.resolve(None))
    curve = [{"cut": None, **none}]
    best = curve[0]
    for cut in candidate_cuts(candidates, fuse_cfg.auto_kept_fractions):  # highest first: ties keep fewer pairs
        row = {"cut": cut, **score(fuse_cfg.resolve(cut))}
        curve.append(row)
        log.info(f"[fuse] auto cut {cut:.4f}: {row['synthetic_kept']} synthetic kept, valid {OBJECTIVE} "
                 f"{row[OBJECTIVE]:.4f} (keep none: {none[OBJECTIVE]:.4f})")
        if row[OBJECTIVE] > best[OBJECTIVE]:
            best = row
    return {"mode": "auto", "selected_on": "valid", "objective": OBJECTIVE, "backbone": backbone,
            "cut": best["cut"], "keep_none": best["cut"] is None, "valid": best, "keep_none_valid": none,
            "curve": curve}
