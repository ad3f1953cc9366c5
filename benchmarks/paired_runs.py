"""Is run B's Recall@K really above run A's? A paired test on the same test users, per fit.

Two finished `llm-i2i run` directories on the same dataset differ in one setting (an item init, a loss, a cut).
Their headline recalls are means over ~20k users, and a difference of a few hits in a thousand is within what
another seed gives. Both runs rank every test user, so each user's hit@K pairs up: this re-ranks each fit's
neighbour lists under the run's own evaluation protocol (`evaluate/metrics.json`), checks that it reproduces
the recorded recall, and reports B - A with McNemar's z over the users whose hit differs (|z| > 1.96: the
difference is unlikely under "same hit rate") and a 95% bootstrap interval over users, overall and for long-tail
targets. The two runs must hold the same prepared dataset.

    python -m benchmarks.paired_runs --a 'text_pca=RUN_A' --b 'text_encoder_pca=RUN_B' --out NAME
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow.parquet as pq

from benchmarks._common import RESULTS, labelled_path, provenance, run_locked, run_record, write_result
from llm_i2i.config import from_dict
from llm_i2i.data import leave_one_out, read_canonical
from llm_i2i.data.longtail import long_tail_mask
from llm_i2i.eval.evaluate import recommend_for_split
from llm_i2i.eval.metrics import hit_ranks
from llm_i2i.eval.protocol import EvalConfig
from llm_i2i.i2i.base import Neighbors
from llm_i2i.progress import log, setup_logging

Z_95 = 1.96


def user_hits(run: Path, k: int) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, float]]:
    """({fit: hit@k per evaluated test user}, long-tail target mask, {fit: recorded recall@k}) of a finished run."""
    metrics = json.loads((run / "evaluate" / "metrics.json").read_text())
    cfg = from_dict(EvalConfig, metrics["protocol"], f"{run}/evaluate/metrics.json protocol")
    split = leave_one_out(read_canonical(run / "prepare" / "dataset").sequences())
    targets = split.targets(cfg.split)
    evaluated = targets >= 0
    tail = long_tail_mask(split.train.item_counts(), cfg.long_tail_fraction)[targets[evaluated]]
    hits, recorded = {}, {}
    for fit, m in metrics["fits"].items():
        backbone, variant = fit.split("/")
        table = pq.read_table(run / "train_i2i" / backbone / variant / "neighbors.parquet")
        ranks = hit_ranks(recommend_for_split(Neighbors.from_table(table, split.full.item_ids), split, cfg), targets)
        hits[fit] = ((ranks >= 0) & (ranks < k))[evaluated]
        recorded[fit] = m[f"recall@{k}"]
    return hits, tail, recorded


def paired(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, rounds: int) -> dict[str, Any]:
    """B - A in hit rate, McNemar's z over the discordant users, and a 95% bootstrap interval over users."""
    only_b, only_a = int((b & ~a).sum()), int((a & ~b).sum())
    z = (only_b - only_a) / np.sqrt(only_b + only_a) if only_b + only_a else 0.0
    diff = b.astype(np.int8) - a.astype(np.int8)
    boot = np.array([diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(rounds)])
    return {"users": int(len(a)), "a": float(a.mean()), "b": float(b.mean()), "difference": float(diff.mean()),
            "relative": float(diff.mean() / a.mean()) if a.mean() else None, "only_a": only_a, "only_b": only_b,
            "mcnemar_z": float(z), "ci95": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))]}


def compare(run_a: Path, run_b: Path, k: int, rounds: int, seed: int) -> dict[str, Any]:
    data = [json.loads((r / "prepare" / "manifest.json").read_text())["files"] for r in (run_a, run_b)]
    if data[0] != data[1]:
        raise SystemExit(f"{run_a} and {run_b} hold different prepared datasets (prepare/manifest.json files)")
    (hits_a, tail, rec_a), (hits_b, _, rec_b) = user_hits(run_a, k), user_hits(run_b, k)
    rng = np.random.default_rng(seed)
    out = {}
    for fit in [f for f in hits_a if f in hits_b]:
        for run, hits, recorded in ((run_a, hits_a, rec_a), (run_b, hits_b, rec_b)):
            if abs(hits[fit].mean() - recorded[fit]) > 1e-9:  # re-ranked here as the run's evaluate stage did
                raise SystemExit(f"{run}: {fit} re-ranks to R@{k} {hits[fit].mean():.6f}, recorded {recorded[fit]:.6f}")
        out[fit] = {"all": paired(hits_a[fit], hits_b[fit], rng, rounds),
                    "long_tail": paired(hits_a[fit][tail], hits_b[fit][tail], rng, rounds)}
        log.info(f"{fit}: B - A {out[fit]['all']['difference']:+.4f} (z {out[fit]['all']['mcnemar_z']:+.2f})")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", required=True, metavar="LABEL=RUN_DIR", type=labelled_path, help="the reference run")
    p.add_argument("--b", required=True, metavar="LABEL=RUN_DIR", type=labelled_path, help="the run compared with it")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap rounds over users")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS / "paired_runs"))
    args = p.parse_args(argv)
    setup_logging()
    (label_a, dir_a), (label_b, dir_b) = args.a, args.b
    record = run_record("paired_runs", argv)
    record.update(a={"label": label_a, "dir": dir_a}, b={"label": label_b, "dir": dir_b}, k=args.k,
                  bootstrap=args.bootstrap, seed=args.seed)
    record["fits"] = fits = compare(Path(dir_a), Path(dir_b), args.k, args.bootstrap, args.seed)
    k = args.k
    lines = [f"# Paired test, R@{k}: {label_b} against {label_a}", "", provenance(record), "",
             f"A = `{dir_a}` ({label_a}), B = `{dir_b}` ({label_b}), same prepared dataset. Each fit's neighbour "
             f"lists re-ranked under the run's own protocol (reproducing its recorded R@{k}); per test user, hit@{k} "
             f"in A and in B. z: McNemar's over the users whose hit differs (|z| > {Z_95}: unlikely under equal hit "
             f"rates). CI: 95% bootstrap over users ({args.bootstrap} rounds, seed {args.seed}).", "",
             f"| fit | users | A R@{k} | B R@{k} | B - A (relative) | 95% CI | z | long-tail users | long-tail A -> B "
             f"| long-tail z |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for fit, r in fits.items():
        al, lt = r["all"], r["long_tail"]
        rel = f" ({al['relative']:+.1%})" if al["relative"] is not None else ""
        lines.append(f"| {fit} | {al['users']:,} | {al['a']:.4f} | {al['b']:.4f} | {al['difference']:+.4f}{rel} | "
                     f"[{al['ci95'][0]:+.4f}, {al['ci95'][1]:+.4f}] | {al['mcnemar_z']:+.2f} | {lt['users']:,} | "
                     f"{lt['a']:.4f} -> {lt['b']:.4f} | {lt['mcnemar_z']:+.2f} |")
    write_result(args.out, record, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_locked(main))
