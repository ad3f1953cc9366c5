"""Swing on realistically skewed graphs at the caps a user meets: `llm-i2i index` (the whole command, and
its kernel alone) and the Ray job with 2 actors, against a minimal compiled mark-and-scan kernel on the
same capped graph in the same run; then a cost model per cap setting, refitted on these graphs.

    flock /tmp/llm_i2i_heavy.lock python -m benchmarks.swing_skewed [--sizes 1e6,5e6] [--caps 1000/1000,100/200]
    (the same as `python -m benchmarks.swing_scale --preset skewed ...`)

Graphs: Zipf(1.8) user lengths (clipped at the per-user cap, so no user is dropped), item popularity
proportional to rank^-0.9 over 0.105 items per edge (the issue's 450k items for 4.3M edges), ids
shuffled; sized by distinct edges. Writes benchmarks/results/swing_scale_skewed.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from benchmarks._common import provenance, run_record, write_result
from benchmarks.swing_plan import ClusterSpec, CostModel, graph_bytes, plan_two_level
from llm_i2i.data import load_dataset
from llm_i2i.data.sequences import Sequences
from llm_i2i.i2i.swing import SwingConfig, build_graph, swing_topk_threaded
from llm_i2i.io import write_json
from llm_i2i.progress import log

ITEMS_PER_EDGE = 450_000 / 4_300_000
RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1e6,5e6", help="distinct edges per graph")
    p.add_argument("--caps", default="1000/1000,100/200", help="max_users_per_item/max_items_per_user, ...")
    p.add_argument("--ray-shards", type=int, default=2, help="also run the Ray job on this many actors (0: skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scratch", default="/tmp/swing_skewed_scratch")
    p.add_argument("--out", default=str(RESULTS / "swing_scale_skewed"))
    p.add_argument("--render", metavar="JSON", help="only re-render the page and plot from a stored run's JSON")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.render:
        render(json.loads(Path(args.render).read_text()), out)
        return 0
    caps = [tuple(int(v) for v in c.split("/")) for c in args.caps.split(",") if c]
    run([int(float(s)) for s in args.sizes.split(",") if s], caps, args.seed, Path(args.scratch), out, args.ray_shards,
        argv if argv is not None else sys.argv[1:])
    return 0


def skewed_sequences(edges: int, seed: int, max_user_len: int = 1000, user_zipf: float = 1.8,
                     item_exponent: float = 0.9) -> Sequences:
    """About `edges` distinct (user, item) edges: Zipf(user_zipf) user lengths clipped to max_user_len, items
    ~ rank^-item_exponent over edges * ITEMS_PER_EDGE items. Draws are repeated until the distinct edges
    reach the target (hot items repeat within a user)."""
    n_items = max(int(edges * ITEMS_PER_EDGE), 2)
    draws = edges
    for _ in range(3):  # the duplicate share depends on the size: correct the draw count twice
        seqs = _draw(draws, n_items, seed, max_user_len, user_zipf, item_exponent)
        distinct = _distinct_edges(seqs)
        draws = int(draws * edges / distinct)
    return seqs


def _draw(draws, n_items, seed, max_user_len, user_zipf, item_exponent) -> Sequences:
    rng = np.random.default_rng(seed)
    lens = np.minimum(rng.zipf(user_zipf, draws), max_user_len).astype(np.int64)
    lens = lens[: int(np.searchsorted(np.cumsum(lens), draws)) + 1]
    total = int(lens.sum())
    c = (n_items + 1) ** (1 - item_exponent) - 1
    rank = np.minimum(((1 + rng.random(total) * c) ** (1 / (1 - item_exponent))).astype(np.int64) - 1, n_items - 1)
    items = rng.permutation(n_items).astype(np.int32)[rank]
    indptr = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=indptr[1:])
    return Sequences(np.arange(len(lens), dtype=np.int64), indptr, items, np.arange(n_items, dtype=np.int64))


def _distinct_edges(seqs: Sequences) -> int:
    user = np.repeat(np.arange(seqs.n_users, dtype=np.int64), seqs.lengths)
    return len(np.unique(user * seqs.n_items + seqs.items))


def run_cli(interactions: Path, out: Path, caps: tuple[int, int], threads: int) -> dict:
    """`llm-i2i index` in a fresh process, timed whole (read, caps, fit, write)."""
    cmd = [sys.executable, "-m", "llm_i2i", "index", "--interactions", str(interactions), "--out", str(out),
           "--set", f"max_users_per_item={caps[0]}", "--set", f"max_items_per_user={caps[1]}"]
    env = {**os.environ, "NUMBA_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - t0
    manifest = json.loads((out / "manifest.json").read_text())
    return {"command": " ".join(["llm-i2i", *cmd[3:]]), "seconds": seconds, "fit_seconds": manifest["fit_seconds"],
            "fit_report": manifest["fit_report"]}


def agreement(ours_parquet: Path, item_ids: np.ndarray, ref_idx: np.ndarray, ref_sc: np.ndarray) -> dict:
    """Same neighbour at the same rank; the index's external ids mapped back to the reference's dense indices."""
    t = pq.read_table(ours_parquet)
    item, nb, sc, rank = (t.column(c).to_numpy() for c in ("item_id", "neighbor_id", "score", "rank"))
    item, nb = np.searchsorted(item_ids, item), np.searchsorted(item_ids, nb)
    idx = np.full(ref_idx.shape, -1, np.int32)
    out = np.full(ref_idx.shape, -np.inf)
    idx[item, rank], out[item, rank] = nb, sc
    ref32 = ref_sc.astype(np.float32).astype(np.float64)
    both = np.isfinite(out) & np.isfinite(ref32)
    rel = np.abs(out[both] - ref32[both]) / np.maximum(np.abs(ref32[both]), 1e-300)
    return {"same_neighbor_at_rank": float((idx == ref_idx).mean()),
            "same_list_length": bool(np.array_equal(np.isfinite(out), np.isfinite(ref32))),
            "max_rel_score_diff": float(rel.max()) if rel.size else 0.0}


def measure(edges: int, caps: tuple[int, int], seed: int, scratch: Path, threads: int, ray_shards: int) -> dict:
    from benchmarks.swing_reference import swing_mark_scan

    cfg = SwingConfig(max_users_per_item=caps[0], max_items_per_user=caps[1])
    generated = skewed_sequences(edges, seed, max_user_len=caps[1])
    inter = scratch / "interactions.parquet"
    pq.write_table(generated.to_interactions(), inter)
    del generated
    seqs = load_dataset(str(inter)).sequences()  # what the command sees: the same dense indices, so the same samples
    graph = build_graph(seqs, cfg)
    n_i = np.diff(graph.item_indptr).astype(np.int64)
    row: dict = {"caps": f"{caps[0]}/{caps[1]}", "target_edges": edges, "edges": _distinct_edges(seqs),
                 "edges_after_caps": graph.n_edges, "users": seqs.n_users, "items": seqs.n_items,
                 "user_pairs": int((n_i * (n_i - 1) // 2).sum()), "items_at_user_cap": int((n_i == caps[0]).sum()),
                 "loadavg_at_start": os.getloadavg()}
    log.info(f"[{row['caps']} {row['edges']:,} edges] {row['users']:,} users, {row['items']:,} items, "
             f"{row['user_pairs']:.3g} user pairs")
    ref = swing_mark_scan(graph, cfg.k, cfg.alpha2, threads)
    row["reference"] = {k: ref[k] for k in ("seconds", "merge_steps", "user_pairs")}
    row["reference"]["merge_steps_per_s"] = ref["merge_steps"] / ref["seconds"]
    log.info(f"  reference mark-and-scan: {ref['seconds']:.1f}s, {ref['merge_steps']:.3g} merge steps")
    t0 = time.perf_counter()
    _, _, steps = swing_topk_threaded(graph, cfg.k, cfg.alpha2, threads)
    kernel_s = time.perf_counter() - t0
    row["ours_kernel"] = {"seconds": kernel_s, "steps": steps, "steps_per_s": steps / kernel_s,
                          "over_reference": kernel_s / ref["seconds"],
                          "seconds_per_reference_merge_step": kernel_s / ref["merge_steps"]}
    log.info(f"  ours, kernel: {kernel_s:.1f}s, {steps:.3g} steps ({kernel_s / ref['seconds']:.2f}x the reference)")
    cli = run_cli(inter, scratch / "index", caps, threads)
    cli["over_reference"] = cli["seconds"] / ref["seconds"]
    cli["agreement_with_reference"] = agreement(scratch / "index" / "neighbors.parquet", seqs.item_ids, ref["idx"],
                                                 ref["scores"])
    row["ours_cli"] = cli
    log.info(f"  llm-i2i index: {cli['seconds']:.1f}s whole, fit {cli['fit_seconds']:.1f}s; "
             f"agreement {cli['agreement_with_reference']}")
    if ray_shards:
        from ray_jobs.swing_sharded import run_sharded_swing

        stats = run_sharded_swing(graph, seqs.item_ids, ray_shards, scratch / "ray", cfg.k, cfg.alpha2, cpus_per_shard=1.0)
        row["ours_ray"] = {k: stats[k] for k in ("shards", "total_seconds", "compute_seconds", "intersection_steps",
                                                  "work_estimate_imbalance")}
        row["ours_ray"]["over_reference"] = stats["total_seconds"] / ref["seconds"]
        log.info(f"  ours, Ray x{ray_shards}: {stats['total_seconds']:.1f}s")
    row["graph_bytes"] = graph_bytes(graph)
    row["replication_4_nodes"] = plan_two_level(graph, 4).replication
    for d in ("index", "ray"):
        shutil.rmtree(scratch / d, ignore_errors=True)
    row["loadavg_at_end"] = os.getloadavg()
    return row


def run(sizes: list[int], caps_list: list[tuple[int, int]], seed: int, scratch: Path, out: Path, ray_shards: int,
        argv: list[str]) -> None:
    import ray

    scratch.mkdir(parents=True, exist_ok=True)
    from llm_i2i.progress import setup_logging

    setup_logging()
    ray.init(num_cpus=2, include_dashboard=False, address="local", _node_ip_address="127.0.0.1", log_to_driver=False)
    rows = []
    t_all = time.perf_counter()
    try:
        measure(20_000, caps_list[0], seed, scratch, 2, ray_shards)  # compiles (numba cache) outside the timings
        for caps in caps_list:
            for edges in sizes:
                rows.append(measure(edges, caps, seed, scratch, 2, ray_shards))
                write_json({"partial": True, "runs": rows}, out.with_suffix(".partial.json"))
    finally:
        ray.shutdown()
    record = {**run_record("swing_skewed", argv), "runs": rows, "benchmark_seconds": time.perf_counter() - t_all}
    render(record, out)
    out.with_suffix(".partial.json").unlink(missing_ok=True)
    log.info(f"wrote {out}.{{json,md,png}}")


def render(record: dict, out: Path) -> None:
    """The cost model, the page and the plot, from a run's record (also to re-render a stored one)."""
    rows = record["runs"]
    record["cost_model"] = {c: cost_model([r for r in rows if r["caps"] == c]) for c in dict.fromkeys(r["caps"] for r in rows)}
    write_result(out, record, markdown(record))
    plot(rows, out.with_suffix(".png"))


def cost_model(rows: list[dict]) -> dict:
    """Steps grow as edges ** exponent, fitted on the smallest and largest graph of one cap setting; the rate
    is the largest graph's (2 threads = 2 cores). Extrapolated to 1B edges, for ours and for the reference."""
    rows = sorted(rows, key=lambda r: r["edges"])
    lo, hi = rows[0], rows[-1]

    def exponent(key: str) -> float:
        if hi["edges"] == lo["edges"]:
            return 1.0
        return float(np.log(_steps(hi, key) / _steps(lo, key)) / np.log(hi["edges"] / lo["edges"]))

    out: dict = {}
    for key in ("ours_kernel", "reference"):
        seconds = hi[key]["seconds"]
        model = CostModel(steps_per_edge=_steps(hi, key) / hi["edges"], steps_per_s_per_core=_steps(hi, key) / seconds / 2,
                          graph_bytes_per_edge=hi["graph_bytes"] / hi["edges"], replication=hi["replication_4_nodes"],
                          fitted_edges=hi["edges"], steps_exponent=exponent(key))
        out[key] = {"model": vars(model), "extrapolations": [model.estimate(1e9, ClusterSpec(), nodes=n) for n in (None, 16)]}
    out["cluster_node"] = vars(ClusterSpec())
    return out


def _steps(row: dict, key: str) -> float:
    return float(row[key]["steps"] if key == "ours_kernel" else row[key]["merge_steps"])


def markdown(res: dict) -> str:
    lines = [
        "# Swing on skewed graphs at the default caps",
        "",
        provenance(res) + f" Under the heavy-work lock; took {res['benchmark_seconds']:.0f} s.",
        "",
        *([res["note"], ""] if res.get("note") else []),
        "Graphs: `benchmarks/swing_skewed.skewed_sequences` (Zipf(1.8) user lengths clipped at the user cap,",
        "item popularity ~ rank^-0.9, 0.105 items per edge). Reference: `benchmarks/swing_reference.swing_mark_scan`,",
        "a minimal numba mark-and-scan kernel, 2 threads, on the same capped graph in the same process as",
        "'ours, kernel' (`swing_topk_threaded`, 2 threads). 'llm-i2i index' is the whole command in a fresh",
        "process (read the Parquet, caps, fit, write the index). Merge steps: list elements the reference marks or",
        "scans (the issue's count); ours counts list elements read plus (pair, common item) updates.",
        "",
        "| caps | edges | after caps | users | items | user pairs | ref. merge steps | ref. s | ref. steps/s "
        "| ours kernel s | ours steps | ours / ref. | `llm-i2i index` s (fit s) | index / ref. | Ray x2 s | same top-K |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["runs"]:
        ref, ker, cli = r["reference"], r["ours_kernel"], r["ours_cli"]
        ray_s = f"{r['ours_ray']['total_seconds']:.1f}" if "ours_ray" in r else "–"
        lines.append(
            f"| {r['caps']} | {r['edges']:,} | {r['edges_after_caps']:,} | {r['users']:,} | {r['items']:,} | "
            f"{r['user_pairs']:.3g} | {ref['merge_steps']:.3g} | {ref['seconds']:.1f} | {ref['merge_steps_per_s']:.3g} | "
            f"{ker['seconds']:.1f} | {ker['steps']:.3g} | **{ker['over_reference']:.2f}×** | {cli['seconds']:.1f} "
            f"({cli['fit_seconds']:.1f}) | {cli['over_reference']:.2f}× | {ray_s} | "
            f"{cli['agreement_with_reference']['same_neighbor_at_rank']:.6f} |")
    lines += ["", "1-minute load average at the start/end of each row (the machine is shared): "
              + "; ".join(f"{r['caps']} {r['edges']:,}: {r['loadavg_at_start'][0]:.1f}/{r['loadavg_at_end'][0]:.1f}"
                          for r in res["runs"]), "", "## Cost model at 1B edges, per cap setting", "",
              "Steps ~ edges^exponent fitted on the two sizes of each cap setting (skew and caps change both the",
              "steps per edge and how fast they grow); rate = the largest graph's steps/s per core on this machine.",
              f"Cluster node: {res['cost_model'][next(iter(res['cost_model']))]['cluster_node']}", "",
              "| caps | kernel | steps/edge (fitted at) | exponent | steps/s/core | steps at 1e9 | nodes | wall h | core-hours |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for caps, cm in res["cost_model"].items():
        for key, name in (("ours_kernel", "ours"), ("reference", "mark-and-scan")):
            m = cm[key]["model"]
            for x in cm[key]["extrapolations"]:
                lines.append(f"| {caps} | {name} | {m['steps_per_edge']:.0f} ({m['fitted_edges']:.3g}) | {m['steps_exponent']:.2f} | "
                             f"{m['steps_per_s_per_core']:.3g} | {x['intersection_steps']:.3g} | {x['nodes']} | "
                             f"{x['wall_hours']:.3f} | {x['core_hours']:.1f} |")
    lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for caps in dict.fromkeys(r["caps"] for r in rows):
        rs = sorted((r for r in rows if r["caps"] == caps), key=lambda r: r["edges"])
        e = [r["edges"] for r in rs]
        ax.plot(e, [r["reference"]["seconds"] for r in rs], "x--", label=f"mark-and-scan reference, caps {caps}")
        ax.plot(e, [r["ours_kernel"]["seconds"] for r in rs], "o-", label=f"ours, kernel, caps {caps}")
        ax.plot(e, [r["ours_cli"]["seconds"] for r in rs], "s:", label=f"llm-i2i index (whole), caps {caps}")
    save_log_log(fig, ax, path, "distinct edges", "wall seconds (2 cores)",
                 "Swing on skewed graphs (Zipf 1.8 users, rank^-0.9 items)")


def save_log_log(fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> None:
    import matplotlib.pyplot as plt

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
