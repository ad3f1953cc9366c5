"""How far item text and attributes alone separate the discriminator's validation pairs.

Scores the same pairs as the discriminator's ROC-AUC (`llm_i2i.llm.sft_metrics.auc_pairs`: each user's validation item vs
one random, or Swing-hard, negative) with content features of the candidate against the user's last <= 10 items:
category-path overlap, attribute (brand/category id) Jaccard, brand-word match, and their rank-sum. A reference
for the discriminator's AUC target: what the item metadata a prompt can show is worth without any model.

  python -m benchmarks.disc_content_features --datasets Beauty Toys_and_Games
Writes benchmarks/results/disc_content_features.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from benchmarks._common import DATA_ROOT, RESULTS, provenance, run_locked, run_record, write_result
from llm_i2i.data import load_dataset
from llm_i2i.data.split import leave_one_out
from llm_i2i.llm.sft_data import swing_neighbors
from llm_i2i.llm.sft_metrics import auc_pairs, roc_auc

FEATURES = ("category_path_overlap", "attribute_jaccard", "brand_word_match")


def item_metadata(root: Path, name: str) -> tuple[dict[int, set], dict[int, set], dict[int, str]]:
    """item id -> category-path prefixes, attribute ids, first title word (the brand in most Amazon titles)."""
    prefixes, brand = {}, {}
    for line in (root / name / "item_text.jsonl").open():
        o = json.loads(line)
        prefixes[o["item_id"]] = {tuple(c[:d]) for c in o.get("categories") or [] for d in range(1, len(c) + 1)}
        brand[o["item_id"]] = ((o.get("title") or "").split(" ") or [""])[0].lower()
    attrs = {int(k): set(v) for k, v in json.loads((root / name / f"{name}_item2attributes.json").read_text()).items()}
    return prefixes, attrs, brand


def features(hist: list[list[int]], cand: list[int], prefixes, attrs, brand) -> dict[str, np.ndarray]:
    """Per pair: deepest shared category prefix, best attribute Jaccard and share of history items of the same brand."""
    def jacc(a: set, b: set) -> float:
        return len(a & b) / max(1, len(a | b))

    out = {f: np.empty(len(cand)) for f in FEATURES}
    for n, (h, c) in enumerate(zip(hist, cand)):
        pc, ac = prefixes.get(c, set()), attrs.get(c, set())
        out["category_path_overlap"][n] = max((max((len(p) for p in prefixes.get(i, set()) & pc), default=0) for i in h), default=0)
        out["attribute_jaccard"][n] = max((jacc(attrs.get(i, set()), ac) for i in h), default=0.0)
        out["brand_word_match"][n] = np.mean([brand.get(i) == brand.get(c) for i in h]) if h else 0.0
    return out


def run(root: Path, name: str) -> dict:
    ds = load_dataset(root / name)
    split = leave_one_out(ds.sequences())
    meta = item_metadata(root, name)
    res = {}
    for negatives in ("random", "hard"):
        hard = swing_neighbors(split.train) if negatives == "hard" else None
        hist, cand, labels = auc_pairs(split, "valid", hard, 10, None, 0)
        f = features(hist, cand, *meta)
        aucs = {k: roc_auc(labels, v) for k, v in f.items()}
        aucs["rank_sum"] = roc_auc(labels, sum(rankdata(v) for v in f.values()))
        res[negatives] = {"pairs": int(len(labels)), "auc": aucs}
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=str(DATA_ROOT))
    p.add_argument("--datasets", nargs="+", default=["Beauty", "Toys_and_Games"])
    p.add_argument("--out", default=str(RESULTS / "disc_content_features"), help="writes OUT.json and OUT.md")
    args = p.parse_args(argv)
    report = run_record("disc_content_features", argv)
    t0 = time.perf_counter()
    report["results"] = results = {name: run(Path(args.data_root), name) for name in args.datasets}
    report["seconds"] = time.perf_counter() - t0
    lines = ["# Content features alone on the discriminator's validation pairs", "", provenance(report), "",
             f"{report['seconds']:.0f} s. Pairs: `auc_pairs` (validation item vs one "
             "random or Swing-hard negative per user, seed 0), the same pairs as the discriminator's ROC-AUC. "
             "Features: the candidate against the user's last <= 10 items.", "",
             "| dataset | negatives | " + " | ".join(FEATURES) + " | rank-sum of the three |",
             "|---|---|" + "---|" * (len(FEATURES) + 1)]
    for name, r in results.items():
        for neg, x in r.items():
            lines.append(f"| {name} | {neg} | " + " | ".join(f"{x['auc'][k]:.3f}" for k in (*FEATURES, "rank_sum")) + " |")
    write_result(args.out, report, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_locked(main))
