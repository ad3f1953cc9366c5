"""What the discriminator's choices are worth against the generator's own ranking, at the same number of pairs.

The discriminator's end-to-end share is Swing R@10 with its cut over the same run without it. Where the validation
cut keeps every candidate, the share is 0 and says nothing about why. This page asks the direct question on a
finished run's scored candidates (`discriminate/scored.parquet`): keep n candidates per user, chosen

- by the generator's rank (its top n: what a smaller `generate.recall_number` would keep, no discriminator);
- by the discriminator's P(Yes), highest n of each user's candidates;
- by the average of the two ranks;
- by one global P(Yes) cut that keeps as many pairs in all (what `fuse.threshold` does);

and fits Swing on real + kept pairs, scored on VALIDATION Recall@10 (overall and long tail), as the cut is. It also
reports how much each score follows item popularity (Spearman correlation with the item's train count): a
discriminator trained against uniform negatives learns that popular items are likelier positives.

    python -m benchmarks.disc_selection --runs "Toys, uniform negatives=runs/toys" --per-user 10 5
Writes benchmarks/results/disc_selection.{json,md}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.stats import spearmanr

from benchmarks._common import RESULTS, labelled_path, provenance, run_locked, run_record, write_result
from llm_i2i.data import leave_one_out, load_dataset
from llm_i2i.eval.protocol import EvalConfig
from llm_i2i.pipeline.cut import validation_metrics
from llm_i2i.pipeline.fuse import FuseConfig

CHOOSERS = ("generator rank", "discriminator P(Yes)", "average of the two ranks", "global P(Yes) cut")


def rank_within_user(users: np.ndarray, *keys: np.ndarray) -> np.ndarray:
    """0-based position of each row among its user's rows, ordered by `keys` ascending (the first key decides)."""
    order = np.lexsort((*reversed(keys), users))
    starts = np.r_[0, np.flatnonzero(np.diff(users[order])) + 1]
    sizes = np.diff(np.r_[starts, len(order)])
    ranks = np.empty(len(order), np.int64)
    ranks[order] = np.arange(len(order)) - np.repeat(starts, sizes)
    return ranks


def selections(scored: pa.Table, n: int) -> dict[str, np.ndarray]:
    """Per chooser, the mask of the rows it keeps: n per user, or (the global cut) as many rows in all."""
    ok = np.asarray(scored.column("error").is_null()) if "error" in scored.column_names else np.ones(scored.num_rows, bool)
    users = scored.column("user_id").to_numpy()
    gen = scored.column("rank").to_numpy().astype(np.int64)
    conf = np.nan_to_num(scored.column("confidence").to_numpy(zero_copy_only=False).astype(np.float64), nan=-1.0)
    disc = rank_within_user(users, -conf, gen)
    both = rank_within_user(users, gen + disc, gen)
    per_user = gen < n
    count = int((per_user & ok).sum())
    cut = np.zeros(len(conf), bool)
    cut[np.argsort(-np.where(ok, conf, -np.inf), kind="stable")[:count]] = True
    return {"generator rank": per_user & ok, "discriminator P(Yes)": (disc < n) & ok,
            "average of the two ranks": (both < n) & ok, "global P(Yes) cut": cut & ok}


def popularity_following(scored: pa.Table, split) -> dict[str, float]:
    """Spearman correlation of each score with the candidate item's train count."""
    counts = split.train.item_counts()[split.train.item_index(scored.column("item_id").to_numpy())]
    return {"discriminator P(Yes)": float(spearmanr(scored.column("confidence").to_numpy(), counts)[0]),
            "generator score": float(spearmanr(scored.column("score").to_numpy(), counts)[0])}


def measure(run_dir: Path, per_user: list[int]) -> dict:
    split = leave_one_out(load_dataset(run_dir / "prepare" / "dataset").sequences())
    scored = pq.read_table(run_dir / "discriminate" / "scored.parquet")
    fuse_cfg, eval_cfg = FuseConfig(threshold=0.0), EvalConfig(split="valid")
    none = validation_metrics(split, None, FuseConfig(add_synthetic=False), "swing", {}, eval_cfg)
    rows = []
    for n in per_user:
        for chooser, keep in selections(scored, n).items():
            m = validation_metrics(split, scored.filter(pa.array(keep)), fuse_cfg, "swing", {}, eval_cfg)
            rows.append({"per_user": n, "chooser": chooser, "pairs": int(keep.sum()), **m})
    return {"dir": str(run_dir), "candidates": scored.num_rows, "keep_none": none, "rows": rows,
            "popularity_spearman": popularity_following(scored, split)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, metavar="LABEL=RUN_DIR", type=labelled_path,
                   help="finished `llm-i2i run` dirs")
    p.add_argument("--per-user", nargs="+", type=int, default=[10, 5], help="candidates kept per user")
    p.add_argument("--out", default=str(RESULTS / "disc_selection"), help="writes OUT.json and OUT.md")
    args = p.parse_args(argv)
    runs = dict(args.runs)
    report = run_record("disc_selection", argv)
    t0 = time.perf_counter()
    report["runs"] = {label: measure(Path(d), args.per_user) for label, d in runs.items()}
    report["seconds"] = time.perf_counter() - t0
    lines = ["# The discriminator's choices against the generator's own ranking", "", provenance(report), "",
             f"{report['seconds']:.0f} s. Swing on real + kept pairs, VALIDATION Recall@10 (long tail in brackets); "
             "n candidates kept per user by each chooser, or one global P(Yes) cut keeping as many pairs in all.", "",
             "| run | real data only | n per user | " + " | ".join(CHOOSERS) + " |", "|---|---|---|" + "---|" * len(CHOOSERS)]
    for label, r in report["runs"].items():
        none = r["keep_none"]
        for n in args.per_user:
            by = {x["chooser"]: x for x in r["rows"] if x["per_user"] == n}
            lines.append(f"| {label} | {none['recall@10']:.4f} ({none['long_tail_recall@10']:.4f}) | {n} | "
                         + " | ".join(f"{by[c]['recall@10']:.4f} ({by[c]['long_tail_recall@10']:.4f})" for c in CHOOSERS)
                         + " |")
    lines += ["", "How much each score follows item popularity (Spearman with the item's train count, over all "
              "scored candidates):", "", "| run | discriminator P(Yes) | generator score |", "|---|---|---|"]
    for label, r in report["runs"].items():
        s = r["popularity_spearman"]
        lines.append(f"| {label} | {s['discriminator P(Yes)']:+.2f} | {s['generator score']:+.2f} |")
    write_result(args.out, report, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_locked(main))
