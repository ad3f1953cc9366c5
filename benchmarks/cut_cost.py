"""What the per-backbone `auto` cut adds, on a finished pipeline run, against the reference measured in the same
run: the first backbone's curve alone (what the fuse stage did before) vs the first backbone and BM25 fitted on each
candidate set, and BPR's / YoutubeDNN's choice from the run's own two fits (read, not refitted).

    python -m benchmarks.cut_cost --run OUT [--out NAME]

OUT is a finished `llm-i2i run --out OUT` (its prepare, discriminate and train_i2i artifacts are read).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

from benchmarks._common import provenance, run_locked, run_record, write_result

NAME = "cut_cost"


def main(argv: Sequence[str] | None = None) -> int:
    import pyarrow.parquet as pq

    from llm_i2i.eval.protocol import EvalConfig
    from llm_i2i.pipeline.cut import choose_between, choose_cuts
    from llm_i2i.pipeline.fuse import FuseConfig
    from llm_i2i.data import leave_one_out, read_canonical
    from llm_i2i.pipeline.stages import LLM_I2I, read_fit

    p = argparse.ArgumentParser(prog=f"benchmarks.{NAME}")
    p.add_argument("--run", required=True, help="a finished pipeline output directory")
    p.add_argument("--out", default=None, help="result stem under benchmarks/results (default cut_cost_<run name>)")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message="Method expects CSR input")
    run = Path(args.run)
    record = run_record(NAME, argv)
    split = leave_one_out(read_canonical(run / "prepare" / "dataset").sequences())
    cands = pq.read_table(run / "discriminate" / "scored.parquet")
    valid, cfg = EvalConfig.from_preset("paper", split="valid"), FuseConfig()
    sets = {"reference: swing curve": {"swing": {}}, "swing + bm25 curves": {"swing": {}, "bm25": {}}}
    seconds: dict[str, list[float]] = {name: [] for name in sets}
    for _ in range(args.repeats):  # alternate, so drift hits both alike
        for name, backbones in sets.items():
            t0 = time.perf_counter()
            cuts = choose_cuts(split, cands, cfg, backbones, valid)
            seconds[name].append(time.perf_counter() - t0)
    fits = SimpleNamespace(path=run / "train_i2i")
    kept = cuts["swing"]["valid"]["synthetic_kept"]
    for b in ("bpr", "youtubednn"):
        if not (run / "train_i2i" / b).exists():
            continue
        t0 = time.perf_counter()
        cuts[b] = choose_between(split, read_fit(fits, b, "no_aug", split.full.item_ids),
                                 read_fit(fits, b, LLM_I2I, split.full.item_ids), cuts["swing"]["cut"], kept, b,
                                 cfg.auto_min_gain_z, valid)
        seconds[f"{b}: choice from its two fits"] = [time.perf_counter() - t0]
    record.update(run=str(run), users=int(split.full.n_users), candidates=cands.num_rows, seconds=seconds,
                  cuts={b: {k: c[k] for k in ("search", "cut", "keep_none", "valid", "keep_none_valid")}
                        for b, c in cuts.items()})
    ref = min(seconds["reference: swing curve"])
    lines = [f"# Per-backbone auto cut: added time ({run.name})", "", provenance(record), "",
             f"{record['users']} users, {record['candidates']} scored candidates; min over {args.repeats} alternating "
             f"repeats; the reference is the first backbone's curve alone (what the fuse stage did before).", "",
             "| step | seconds | added over the reference |", "|---|---|---|"]
    for name, s in seconds.items():
        added = {"reference: swing curve": 0.0, "swing + bm25 curves": min(s) - ref}.get(name, min(s))  # choices: all
        lines.append(f"| {name} | {min(s):.2f} | {added:+.2f} |")
    lines += ["", "| backbone | cuts tried | chosen | valid R@10 keep none -> chosen | z of the chosen cut (keep none: of "
              "the best cut) |", "|---|---|---|---|---|"]
    for b, c in cuts.items():
        chosen = "keep none" if c["keep_none"] else f"{c['cut']:.4g}"
        z = (max(c["curve"][1:], key=lambda r: r["recall@10"]) if c["keep_none"] else c["valid"])["z"]
        lines.append(f"| {b} | {c['search']} | {chosen} | {c['keep_none_valid']['recall@10']:.4f} -> "
                     f"{c['valid']['recall@10']:.4f} | {z:+.2f} |")
    write_result(args.out or f"{NAME}_{run.name}", record, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_locked(main))
