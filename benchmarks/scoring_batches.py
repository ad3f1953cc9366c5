"""Scoring memory and speed: batches capped by prompts alone (the reference) vs also by padded tokens, same run.

Validation scoring (`discriminator_scores`, the per-epoch AUC) and the HF engine cut their pairs into forward
passes. A cap on prompts alone sizes memory for the default model's 28-token prompts; a base with titles in the
prompt runs ~14x the tokens per prompt through 15x the layers, and 512 such prompts at once were OOM-killed at
24 GB. `llm_i2i.llm.scoring` now also caps the padded tokens per pass (`max_tokens`) and groups prompts by length.

The reference is the scoring module as it was before (`--reference-rev`, read from git), capped by prompts alone
(`--reference-prompts`). Each case scores one checkpoint's validation AUC pairs (random negatives) under each
setting, each in a fresh process so that its peak RSS is its own; the settings alternate over `--rounds` (best time,
largest peak kept). The page gives pairs/s, the peak RSS above the loaded model, and the largest P(Yes) difference
from the case's first setting.

    python -m benchmarks.scoring_batches \\
        --case default=RUN/sft_discriminator/model::RUN/prepare/dataset \\
        --case smollm2_titles=out/disc_slice/CKPT::out/data/SLICE::80 --reference-prompts 32 128 --caps 512:16384
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

import numpy as np

from benchmarks._common import REPO, labelled_path, provenance, run_locked, run_record, write_result
from llm_i2i.progress import log, setup_logging


def rss_mib() -> float:
    """This process's resident memory now."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def scoring_at(rev: str) -> ModuleType:
    """`llm_i2i.llm.scoring` as it was at git revision `rev`, as a module of its own."""
    source = subprocess.run(["git", "show", f"{rev}:llm_i2i/llm/scoring.py"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout
    module = ModuleType(f"scoring_at_{rev}")
    exec(compile(source, f"{rev}:llm_i2i/llm/scoring.py", "exec"), module.__dict__)
    return module


def score_once(checkpoint: str, dataset: str, users: int, prompts: int, tokens: int, reference_rev: str,
               out: str) -> None:
    """In a child process: one setting's scoring of the case's pairs, written as JSON (P(Yes) included). Tokens 0:
    the reference module at `reference_rev`, capped by prompts alone."""
    from llm_i2i.data import leave_one_out, load_dataset
    from llm_i2i.llm import scoring
    from llm_i2i.llm.modeling import load_checkpoint
    from llm_i2i.llm.prompts import titles_from_items
    from llm_i2i.llm.sft_metrics import auc_pairs

    model, tok, manifest = load_checkpoint(checkpoint)
    ds = load_dataset(dataset)
    sc = manifest.get("sft_config", {})
    titles = titles_from_items(ds.items) if sc.get("titles") else None
    loo = leave_one_out(ds.sequences())
    history = int(sc.get("max_history", 10))
    caps = {"batch_size": prompts} if tokens == 0 else {"batch_size": prompts, "max_tokens": tokens}
    score = (scoring_at(reference_rev) if tokens == 0 else scoring).yes_probability

    def pairs_of(n_users):
        h, c, _ = auc_pairs(loo, "valid", None, history, n_users, 0)
        return h, c

    score(model, tok, *pairs_of(8), titles=titles, max_history=history, **caps)  # warm-up
    histories, candidates = pairs_of(users or None)
    loaded = rss_mib()
    t0 = time.perf_counter()
    p = score(model, tok, histories, candidates, titles=titles, max_history=history, **caps)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(out).write_text(json.dumps({"pairs": len(p), "seconds": seconds, "rss_loaded_mib": loaded,
                                     "peak_rss_mib": peak, "p_yes": p.tolist()}))


def run_child(case: tuple[str, str], users: int, prompts: int, tokens: int, reference_rev: str,
              tmp: Path) -> dict[str, Any]:
    checkpoint, dataset = case
    out = tmp / f"child_{os.getpid()}_{time.monotonic_ns()}.json"
    cmd = [sys.executable, "-m", "benchmarks.scoring_batches", "--child", checkpoint, dataset, str(users),
           str(prompts), str(tokens), reference_rev, str(out)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:  # an OOM kill is a result, not a crash of the benchmark
        return {"failed": f"exit {done.returncode}: {done.stderr.strip()[-300:]}"}
    got = json.loads(out.read_text())
    out.unlink()
    return got


def parse_case(spec: str) -> tuple[str, tuple[str, str], int | None]:
    """LABEL=CHECKPOINT::DATASET[::USERS]: USERS overrides --users for this case (a long-prompt base is slow)."""
    label, paths = labelled_path(spec)
    checkpoint, sep, rest = paths.partition("::")
    dataset, _, users = rest.partition("::")
    if not (sep and checkpoint and dataset) or (users and not users.isdigit()):
        raise argparse.ArgumentTypeError(f"{spec!r}: expected LABEL=CHECKPOINT::DATASET[::USERS]")
    return label, (checkpoint, dataset), int(users) if users else None


def parse_caps(spec: str) -> tuple[int, int]:
    try:
        prompts, tokens = (int(x) for x in spec.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{spec!r}: expected PROMPTS:TOKENS") from None
    if prompts < 1 or tokens < 1:
        raise argparse.ArgumentTypeError(f"{spec!r}: PROMPTS and TOKENS >= 1")
    return prompts, tokens


def render(record: dict[str, Any]) -> str:
    out = ["# Scoring batches: a cap on prompts alone vs prompts and padded tokens", "", provenance(record), "",
           f"Each case scores its checkpoint's validation AUC pairs (one held-out positive and one random negative "
           f"per user; users: all when 0) in a fresh process per setting, best time and largest peak of "
           f"{record['rounds']} alternating round(s). `prompts:tokens` caps one "
           f"forward pass; `prompts:-` is the reference, the scoring module at `{record['reference_rev']}` (before "
           "the token cap), capped by prompts alone. Scoring peak: the process's "
           "peak RSS minus its RSS once the model and data were loaded (and 8 users scored as a warm-up). Largest |dP(Yes)|: against the case's first "
           "setting.", "",
           "| case | users | prompts:tokens | pairs | pairs/s | scoring peak MiB | peak RSS MiB | largest abs dP(Yes) |",
           "|---|---|---|---|---|---|---|---|"]
    for r in record["rows"]:
        caps = f"{r['prompts']}:{r['tokens'] or '-'}"
        if "failed" in r:
            out.append(f"| {r['case']} | {r['users']} | {caps} | - | - | - | - | {r['failed']} |")
            continue
        rate = r["pairs"] / r["seconds"]
        rate_text = f"{rate:,.0f}" if rate >= 100 else f"{rate:.2f}"
        out.append(f"| {r['case']} | {r['users']} | {caps} | {r['pairs']:,} | {rate_text} | "
                   f"{r['peak_rss_mib'] - r['rss_loaded_mib']:,.0f} | {r['peak_rss_mib']:,.0f} | "
                   f"{r['max_abs_diff']:.1e} |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", type=parse_case, action="append", default=[],
                    help="LABEL=CHECKPOINT::DATASET, a discriminator checkpoint and the dataset it was tuned on")
    ap.add_argument("--reference-prompts", type=int, nargs="*", default=[512],
                    help="prompt caps of the reference settings (the scoring module at --reference-rev)")
    ap.add_argument("--reference-rev", default="bb3c3bd",
                    help="the revision of llm_i2i/llm/scoring.py before the token cap")
    ap.add_argument("--caps", type=parse_caps, nargs="+", default=[(512, 16384)],
                    help="PROMPTS:TOKENS per forward pass of the current scoring module")
    ap.add_argument("--users", type=int, default=4000, help="validation users scored (0: all)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="scoring_batches")
    ap.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        ckpt, data, users, prompts, tokens, rev, out = args.child
        score_once(ckpt, data, int(users), int(prompts), int(tokens), rev, out)
        return 0
    if not args.case:
        ap.error("give at least one --case")
    record = run_record("scoring_batches", argv)
    setup_logging()
    record.update(rounds=args.rounds, reference_rev=args.reference_rev, rows=[])
    settings = [(p, 0) for p in args.reference_prompts] + list(args.caps)
    tmp = REPO / "out" / "scoring_batches"
    tmp.mkdir(parents=True, exist_ok=True)
    for label, case, case_users in args.case:
        users = args.users if case_users is None else case_users
        runs: dict[tuple[int, int], list[dict[str, Any]]] = {caps: [] for caps in settings}
        for _ in range(args.rounds):  # settings alternate, so a load spike does not land on one of them
            for caps in settings:
                runs[caps].append(run_child(case, users, *caps, args.reference_rev, tmp))
                log.info(f"{label} {caps}: {runs[caps][-1].get('failed') or round(runs[caps][-1]['seconds'], 2)}")
        reference = None
        for (prompts, tokens), got in runs.items():
            row = {"case": label, "checkpoint": case[0], "dataset": case[1], "users": users, "prompts": prompts,
                   "tokens": tokens}
            failed = [g["failed"] for g in got if "failed" in g]
            if failed:
                row["failed"] = failed[0]
            else:
                p = np.asarray(got[0]["p_yes"])
                reference = p if reference is None else reference
                row.update(pairs=got[0]["pairs"], seconds=min(g["seconds"] for g in got),
                           rss_loaded_mib=got[0]["rss_loaded_mib"], peak_rss_mib=max(g["peak_rss_mib"] for g in got),
                           max_abs_diff=float(np.max(np.abs(p - reference))) if len(p) else 0.0)
            record["rows"].append(row)
        write_result(args.out, record, render(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main() if "--child" in sys.argv else run_locked(main))
