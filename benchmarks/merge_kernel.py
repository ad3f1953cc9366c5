"""The serving fan-out merge (`FanoutMerger.recommend_ids`: external ids in and out, as `IndexService` calls it) against
a vectorised NumPy reference doing the same work (id lookup, merge, id gather), same requests.

Index: Swing (K=200) on Beauty, written and loaded as the index `serve_load.py` serves. Requests: the same M=100
recent-item lists drawn by popularity as `serve_load.py` sends. For each k, both implementations run over all requests
in alternating passes (kernel pass, reference pass, ...) so this shared VM's speed drift hits both; outputs are checked
equal first. Each is timed warm (calls back to back) and cold: after a busy wait of --gap-us before every call, the time a
serving replica spends in Serve's own request handling between two merges. On this shared VM the caches lose a merge's
data in that time (neighbouring tenants), and a replica's merge ran at about its cold time, not its warm one.

  python -m benchmarks.merge_kernel      (takes the heavy-work lock itself)

Writes benchmarks/results/merge_kernel.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from benchmarks._common import DATA_ROOT, RESULTS, provenance, run_locked, run_record, write_result
from benchmarks.serve_load import recommend_requests
from llm_i2i.data import load_dataset
from llm_i2i.i2i import make_backbone
from llm_i2i.index.store import load_index, write_index
from llm_i2i.kernels.merge import FanoutMerger
from llm_i2i.progress import log, setup_logging


def numpy_merge(nb, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum merge of external ids (all known), recent items excluded, ties by item index: one bincount over the
    concatenated neighbour rows."""
    recent = np.searchsorted(nb.item_ids, ids)
    trig = np.unique(recent)
    rows = [np.arange(nb.indptr[i], nb.indptr[i + 1]) for i in trig]
    pos = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    cand = nb.neighbors[pos]
    acc = np.bincount(cand, weights=nb.scores[pos].astype(np.float64), minlength=nb.n_items)
    touched = np.zeros(nb.n_items, bool)
    touched[cand] = True
    touched[recent] = False
    idx = np.flatnonzero(touched)
    order = np.lexsort((idx, -acc[idx]))[:k]
    return nb.item_ids[idx[order]], acc[idx[order]]


def _busy_wait(seconds: float) -> None:
    """Spin (not sleep: an idle vCPU may be handed to another tenant) for `seconds`."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    record = run_record("merge_kernel", argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA_ROOT / "Beauty"))
    ap.add_argument("--m", type=int, default=100)
    ap.add_argument("--ks", type=int, nargs="+", default=[10, 200])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--gap-us", type=float, default=300.0, help="busy wait before each cold call")
    ap.add_argument("--out", default=str(RESULTS / "merge_kernel"))
    args = ap.parse_args(argv)
    setup_logging()
    ds = load_dataset(args.data)
    seqs = ds.sequences()
    fitted = make_backbone("swing", overrides={"k": 200}).fit(seqs)
    reqs = recommend_requests(np.random.default_rng(0), fitted.item_ids, seqs.item_counts().astype(np.float64), args.m,
                              200, args.requests)
    recents = [np.array(json.loads(r["body"])["recent_items"], np.int64) for r in reqs]
    with tempfile.TemporaryDirectory() as tmp:  # the served layout (memory-mapped arrays, id table); mappings outlive the dir
        ix = load_index(write_index(fitted, Path(tmp) / "index", {"backbone": "swing", "dataset": ds.name}))
    nb = ix.neighbors  # float32 scores, as served (the fit's are float64)
    visits = np.diff(nb.indptr)
    merger = FanoutMerger(nb, id_table=ix.id_table)
    results = {}
    for k in args.ks:
        for r in recents:  # same items, same scores, same order (also warms both paths)
            got_i, got_s, _, _ = merger.recommend_ids(r, k, args.m, True)
            want_i, want_s = numpy_merge(nb, r, k)
            if not (np.array_equal(got_i, want_i) and np.allclose(got_s, want_s, rtol=1e-12)):
                raise AssertionError(f"kernel and NumPy reference disagree at k={k}")
        runs = {"kernel": lambda r: merger.recommend_ids(r, k, args.m, True), "numpy": lambda r: numpy_merge(nb, r, k)}
        res = {}
        for regime, gap_s in (("warm", 0.0), ("cold", args.gap_us / 1e6)):
            times = {"kernel": [], "numpy": []}
            for _ in range(args.repeats):  # whole passes alternate: per call, one's allocations would evict the other's cache
                for name, run in runs.items():
                    for r in recents:
                        _busy_wait(gap_s)
                        t0 = time.thread_time_ns()
                        run(r)
                        times[name].append((time.thread_time_ns() - t0) / 1e9)
            res[regime] = {name: {"p50_us": float(np.percentile(t, 50) * 1e6), "p99_us": float(np.percentile(t, 99) * 1e6)}
                           for name, t in times.items()}
            res[regime]["numpy_over_kernel_p50"] = res[regime]["numpy"]["p50_us"] / res[regime]["kernel"]["p50_us"]
        results[f"k={k}"] = res
        log.info(f"k={k}: {res}")
    report = {**record, "gap_us": args.gap_us,
              "index": {"dataset": ds.name, "items": nb.n_items, "K": 200, "rows": int(nb.indptr[-1])},
              "m": args.m,
              "neighbour_visits_per_request": float(np.mean([visits[np.searchsorted(nb.item_ids, r)].sum()
                                                             for r in recents])),
              "results": results}
    lines = ["# Fan-out merge kernel vs NumPy reference", "",
             provenance(report),
             f"Index: Swing on {ds.name} ({nb.n_items:,} items, K=200). {args.requests} requests of M={args.m} recent items "
             f"(drawn by popularity, as `serve_load.py` sends), {report['neighbour_visits_per_request']:,.0f} neighbour "
             f"visits per request on average; sum merge, recent items excluded; both sides take external ids and "
             f"answer external ids. Outputs checked identical first; "
             f"{args.repeats} alternating passes over all requests per implementation; thread CPU time per call. Cold: a "
             f"{args.gap_us:.0f} us busy wait before every call.", "",
             "| k | calls | kernel p50 / p99 us | NumPy reference p50 / p99 us | reference / kernel (p50) |",
             "|---|---|---|---|---|"]
    for k, by_regime in results.items():
        for regime, r in by_regime.items():
            lines.append(f"| {k[2:]} | {regime} | {r['kernel']['p50_us']:.1f} / {r['kernel']['p99_us']:.1f} | "
                         f"{r['numpy']['p50_us']:.1f} / {r['numpy']['p99_us']:.1f} | {r['numpy_over_kernel_p50']:.1f}x |")
    out = write_result(args.out, report, "\n".join(lines) + "\n")
    log.info(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_locked(main))
