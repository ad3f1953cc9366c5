"""Sharded Swing at scale: our Ray actors (1 and 2) vs the Flink-ML-style item-centric reference in
Python and vs PySpark, on the same synthetic power-law graphs with the same caps, plus the
intersection-step floor and a cost model extrapolated to 1B / 10B edges.

    flock /tmp/llm_i2i_heavy.lock .venv/bin/python -m benchmarks.swing_scale \
        [--sizes 1e6,1e7,1e8] [--spark-sizes 1e6,1e7] [--reference-size 1e6] [--one-shard-max 1e7]

Writes benchmarks/results/swing_scale.{json,md,png}. `--preset skewed ARGS` runs
`python -m benchmarks.swing_skewed ARGS` instead: skewed graphs at the default caps, `llm-i2i index`
against a minimal compiled kernel.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.swing_plan import ClusterSpec, CostModel, graph_bytes, plan_two_level
from benchmarks._common import machine_info
from benchmarks import swing_skewed
from llm_i2i.data.sequences import Sequences
from llm_i2i.i2i.swing import SwingConfig, build_graph, item_work, swing_topk
from llm_i2i.io import write_json, write_text
from llm_i2i.progress import log

RESULTS = Path(__file__).resolve().parent / "results"
FLOOR_STEPS_PER_S_PER_CORE = 1e9  # one intersection step (list element read) per ns per core: the ideal


def power_law_sequences(edges: int, seed: int, mean_item_degree: float = 20.0, item_exponent: float = 0.9,
                        user_tail: float = 2.5, max_user_len: int = 200) -> Sequences:
    """Users with Pareto(user_tail) list lengths (>= 2, <= max_user_len); items drawn with Zipf-like
    popularity rank^-item_exponent over edges / mean_item_degree items, ids shuffled. The shape is
    the same at every size, so work per edge stays about constant as the graph grows."""
    rng = np.random.default_rng(seed)
    n_items = max(int(edges / mean_item_degree), 2)
    lens = np.clip((2 * (1 - rng.random(edges // 2 + 1)) ** (-1 / (user_tail - 1))).astype(np.int64), 2, max_user_len)
    n_users = int(np.searchsorted(np.cumsum(lens), edges)) + 1
    lens = lens[:n_users]
    total = int(lens.sum())
    c = (n_items + 1) ** (1 - item_exponent) - 1
    rank = np.minimum(((1 + rng.random(total) * c) ** (1 / (1 - item_exponent))).astype(np.int64) - 1, n_items - 1)
    items = rng.permutation(n_items).astype(np.int32)[rank]
    indptr = np.zeros(n_users + 1, np.int64)
    np.cumsum(lens, out=indptr[1:])
    return Sequences(np.arange(n_users, dtype=np.int64), indptr, items, np.arange(n_items, dtype=np.int64))


def read_dense(path: Path, n_items: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Our neighbors.parquet (item ids == dense indices here) as [n_items, k] float32 scores."""
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    item, nb, sc, rank = (t.column(c).to_numpy() for c in ("item_id", "neighbor_id", "score", "rank"))
    idx = np.full((n_items, k), -1, np.int32)
    out = np.full((n_items, k), -np.inf)
    idx[item, rank], out[item, rank] = nb, sc
    return idx, out


def agreement(idx_a, sc_a, idx_b, sc_b) -> dict:
    """Same neighbour at the same rank; scores compared where both present (float32 storage)."""
    both = np.isfinite(sc_a) & np.isfinite(sc_b)
    rel = np.abs(sc_a[both] - sc_b[both]) / np.maximum(np.abs(sc_b[both]), 1e-300)
    return {
        "same_neighbor_at_rank": float((idx_a == idx_b).mean()),
        "same_list_length": bool(np.array_equal(np.isfinite(sc_a), np.isfinite(sc_b))),
        "max_rel_score_diff": float(rel.max()) if rel.size else 0.0,
    }


def run_ours(graph, shards: int, k: int, alpha2: float, scratch: Path) -> tuple[dict, Path]:
    from ray_jobs.swing_sharded import run_sharded_swing

    out = scratch / f"ours_{shards}"
    stats = run_sharded_swing(graph, np.arange(graph.n_items, dtype=np.int64), shards, out, k, alpha2,
                              cpus_per_shard=1.0)
    per = stats["per_shard"]
    stats["edges_per_s"] = graph.n_edges / stats["total_seconds"]
    stats["peak_rss_per_actor_bytes"] = max(s["ru_maxrss_bytes"] for s in per)
    stats["steps_per_s_per_core"] = stats["intersection_steps"] / sum(s["seconds"] for s in per)
    stats["floor_seconds"] = stats["intersection_steps"] / (FLOOR_STEPS_PER_S_PER_CORE * shards)
    stats["over_floor"] = stats["compute_seconds"] / stats["floor_seconds"]
    return stats, out / "neighbors.parquet"


def main(argv: list[str] | None = None) -> int:
    argv = list(argv if argv is not None else sys.argv[1:])
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default="power_law")
    known, rest = pre.parse_known_args(argv)
    if known.preset == "skewed":
        return swing_skewed.main(rest)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=("power_law", "skewed"), default="power_law",
                   help="skewed: `benchmarks/swing_skewed.py` with the remaining arguments (see its --help)")
    p.add_argument("--sizes", default="1e6,1e7,1e8")
    p.add_argument("--spark-sizes", default="1e6,1e7")
    p.add_argument("--reference-size", type=float, default=1e6)
    p.add_argument("--reference-items", type=int, default=400, help="items (evenly strided) the Python reference scores")
    p.add_argument("--one-shard-max", type=float, default=1e7, help="largest size also run on 1 actor")
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--max-users-per-item", type=int, default=100)
    p.add_argument("--max-items-per-user", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scratch", default="/tmp/swing_scale_scratch")
    p.add_argument("--out", default=str(RESULTS / "swing_scale"))
    p.add_argument("--render", metavar="PARTIAL_JSON", help="only re-render json/md/png from a (partial) run's JSON")
    args = p.parse_args(argv)
    if args.render:
        import json

        done = json.loads(Path(args.render).read_text())
        finish(done["runs"], done.get("argv"), Path(args.out), done.get("seconds", float("nan")), done["swing_config"])
        return 0
    sizes = [int(float(s)) for s in args.sizes.split(",") if s]
    spark_sizes = {int(float(s)) for s in args.spark_sizes.split(",") if s}
    cfg = SwingConfig(k=args.k, max_users_per_item=args.max_users_per_item, max_items_per_user=args.max_items_per_user)
    cfg.validate()
    swing_config = {"k": cfg.k, "alpha1": cfg.alpha1, "alpha2": cfg.alpha2, "beta": cfg.beta,
                    "max_users_per_item": cfg.max_users_per_item, "max_items_per_user": cfg.max_items_per_user}
    scratch = Path(args.scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)

    import ray

    from llm_i2i.progress import setup_logging
    from llm_i2i.raycluster import init_ray

    setup_logging()
    init_ray("local", num_cpus=2)
    rows = []
    t_all = time.perf_counter()
    try:
        for edges in sizes:
            row: dict = {"target_edges": edges, "loadavg_at_start": os.getloadavg()}
            t0 = time.perf_counter()
            seqs = power_law_sequences(edges, args.seed)
            graph = build_graph(seqs, cfg)
            del seqs
            row["graph_build_seconds"] = time.perf_counter() - t0
            n_i = np.diff(graph.item_indptr)
            row.update(edges=graph.n_edges, users=len(graph.user_indptr) - 1, items=graph.n_items,
                       max_item_degree_after_cap=int(n_i.max()), graph_report=graph.report,
                       graph_bytes=graph_bytes(graph), estimated_work=float(item_work(graph).sum()))
            log.info(f"[{edges:.0e}] graph: {graph.n_edges} edges, {graph.n_items} items in {row['graph_build_seconds']:.1f}s")
            row["two_level"] = {str(n): {k_: v for k_, v in plan_two_level(graph, n).summary().items() if k_ != "per_node"}
                                for n in (2, 4, 8, 16)}
            ours_path = None
            for shards in ([1, 2] if edges <= args.one_shard_max else [2]):
                stats, path = run_ours(graph, shards, cfg.k, cfg.alpha2, scratch)
                row[f"ours_{shards}"] = stats
                log.info(f"[{edges:.0e}] ours x{shards}: {stats['total_seconds']:.1f}s, {stats['intersection_steps']:.3g} steps, "
                         f"{stats['over_floor']:.1f}x floor, peak RSS/actor {stats['peak_rss_per_actor_bytes'] / 2**20:.0f} MiB")
                if ours_path is not None:
                    shutil.rmtree(ours_path.parent)
                ours_path = path
            need_dense = edges in spark_sizes or edges == int(args.reference_size)
            ours_idx, ours_sc = read_dense(ours_path, graph.n_items, cfg.k) if need_dense else (None, None)
            shutil.rmtree(ours_path.parent)
            best = row["ours_2"]["total_seconds"]
            if edges == int(args.reference_size):
                from benchmarks.swing_reference import swing_item_centric

                sample = np.linspace(0, graph.n_items - 1, min(args.reference_items, graph.n_items)).astype(np.int64)
                ridx, rsc, secs = swing_item_centric(graph, cfg.k, cfg.alpha2, sample)
                _, _, sample_steps = swing_topk(graph, cfg.k, cfg.alpha2, sample)
                work = item_work(graph)
                full_est = secs * work.sum() / work[sample].sum()
                row["reference"] = {
                    "items_scored": int(len(sample)), "seconds_on_sample": secs,
                    "estimated_full_seconds": full_est,
                    "steps_per_s": sample_steps / secs,
                    "vs_ours_2": full_est / best,
                    "agreement_with_ours": agreement(ridx, rsc.astype(np.float32).astype(np.float64), ours_idx[sample], ours_sc[sample]),
                }
                log.info(f"[{edges:.0e}] reference: {secs:.1f}s on {len(sample)} items, ~{full_est:.0f}s full ({full_est / best:.0f}x ours)")
            if edges in spark_sizes:
                from benchmarks import swing_pyspark

                try:
                    sp = swing_pyspark.run(graph, cfg.k, cfg.alpha2, cores=2, work_dir=str(scratch))
                except Exception as e:  # recorded, not hidden: the table shows the failure
                    row["pyspark_error"] = repr(e)[:2000]
                    log.error(f"[{edges:.0e}] pyspark failed: {e!r}")
                    sp = None
            if edges in spark_sizes and sp is not None:
                row["pyspark"] = {"seconds": sp["seconds"], "edges_per_s": graph.n_edges / sp["seconds"],
                                  "vs_ours_2": sp["seconds"] / best,
                                  "agreement_with_ours": agreement(sp["idx"], sp["scores"].astype(np.float32).astype(np.float64), ours_idx, ours_sc)}
                if "ours_1" in row:
                    row["pyspark"]["vs_ours_1"] = sp["seconds"] / row["ours_1"]["total_seconds"]
                log.info(f"[{edges:.0e}] pyspark: {sp['seconds']:.1f}s ({row['pyspark']['vs_ours_2']:.0f}x ours x2)")
            row["loadavg_at_end"] = os.getloadavg()
            rows.append(row)
            write_json({"partial": True, "argv": argv if argv is not None else sys.argv[1:], "runs": rows,
                        "seconds": time.perf_counter() - t_all, "swing_config": swing_config}, Path(args.out).with_suffix(".partial.json"))
            del graph
    finally:
        ray.shutdown()
    finish(rows, argv if argv is not None else sys.argv[1:], Path(args.out), time.perf_counter() - t_all, swing_config)
    return 0


def finish(rows: list[dict], argv: list[str] | None, out: Path, seconds: float, swing_config: dict) -> None:
    """Write json/md/png; rows in edge order whatever order the sizes ran in."""
    rows = sorted(rows, key=lambda r: r["edges"])
    result = {
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.swing_scale", *(argv or [])]),
        "machine": machine_info(),
        "swing_config": swing_config,
        "runs": rows,
        "driver_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "benchmark_seconds": seconds,
    }
    result["cost_model"] = cost_model(rows)
    write_json(result, out.with_suffix(".json"))
    plot(rows, out.with_suffix(".png"))
    write_text(markdown(result), out.with_suffix(".md"))
    log.info(f"wrote {out}.{{json,md,png}} in {seconds:.0f}s")


def _model_from(row: dict, replication: float) -> CostModel:
    o = row["ours_2"]
    return CostModel(steps_per_edge=o["intersection_steps"] / row["edges"], steps_per_s_per_core=o["steps_per_s_per_core"],
                     graph_bytes_per_edge=row["graph_bytes"] / row["edges"], replication=replication,
                     fixed_seconds=o["total_seconds"] - o["compute_seconds"])


def cost_model(rows: list[dict]) -> dict:
    """Fit on every point but the largest, predict the largest (on this 2-core node), then extrapolate
    from the largest to 1B / 10B edges on a cluster of 32-core / 256 GB nodes."""
    this_node = ClusterSpec(cores_per_node=2, memory_per_node_bytes=24 * 2**30)
    out: dict = {}
    largest = rows[-1]
    if len(rows) >= 2:
        fit = _model_from(rows[-2], largest["two_level"]["4"]["replication"])
        pred = fit.estimate(largest["edges"], this_node, nodes=1)["wall_hours"] * 3600
        out["check"] = {"fitted_on_edges": rows[-2]["edges"], "predicted_edges": largest["edges"],
                        "predicted_seconds": pred, "measured_seconds": largest["ours_2"]["total_seconds"],
                        "measured_over_predicted": largest["ours_2"]["total_seconds"] / pred}
    cluster = ClusterSpec()
    model = _model_from(largest, largest["two_level"]["4"]["replication"])
    out["model"] = {k: getattr(model, k) for k in ("steps_per_edge", "steps_per_s_per_core", "graph_bytes_per_edge",
                                                    "replication", "fixed_seconds")}
    out["cluster_node"] = vars(cluster)
    out["extrapolations"] = [model.estimate(e, cluster, nodes=n) for e in (1e9, 1e10) for n in (None, 16)]
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    e = np.array([r["edges"] for r in rows], float)
    series = {
        "ours, 2 actors": [r["ours_2"]["total_seconds"] for r in rows],
        "intersection-step floor (1e9 steps/s/core, 2 cores)": [r["ours_2"]["floor_seconds"] for r in rows],
    }
    for label, ys in series.items():
        ax.plot(e, ys, "o-", label=label)
    one = [(r["edges"], r["ours_1"]["total_seconds"]) for r in rows if "ours_1" in r]
    if one:
        ax.plot(*zip(*one), "s--", label="ours, 1 actor")
    sp = [(r["edges"], r["pyspark"]["seconds"]) for r in rows if "pyspark" in r]
    if sp:
        ax.plot(*zip(*sp), "^-", label="PySpark local[2]")
    ref = [(r["edges"], r["reference"]["estimated_full_seconds"]) for r in rows if "reference" in r]
    if ref:
        ax.plot(*zip(*ref), "x", ms=10, label="item-centric Python reference (sampled, extrapolated)")
    swing_skewed.save_log_log(fig, ax, path, "edges (after caps)", "wall seconds", "Swing top-K on power-law graphs, 2-core machine")


def markdown(res: dict) -> str:
    mib = 2**20
    lines = [
        "# Sharded Swing at scale",
        "",
        f"Command: `{res['command']}` (under `flock /tmp/llm_i2i_heavy.lock`)  ",
        f"Machine: {res['machine']}  ",
        f"Swing: {res['swing_config']}; benchmark took {res['benchmark_seconds']:.0f} s.",
        "",
        "Graphs: `power_law_sequences` (Pareto user lengths, Zipf-like item popularity, ids shuffled), then the",
        "Swing caps; every method gets the same capped graph. Times exclude generating/capping the graph",
        "(reported separately) and include putting it in the object store / reading it, all compute and",
        "writing the top-K Parquet.",
        "",
        "| edges | items | build s | ours 1 actor s | ours 2 actors s | edges/s (2) | intersection steps | floor s (2 cores) | ours / floor | peak RSS/actor MiB | PySpark s | PySpark / ours(2) | reference s (est.) | reference / ours(2) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["runs"]:
        o2 = r["ours_2"]
        o1 = r.get("ours_1")
        sp = r.get("pyspark")
        ref = r.get("reference")
        o1s = f"{o1['total_seconds']:.1f}" if o1 else "–"
        sps = f"{sp['seconds']:.1f} | **{sp['vs_ours_2']:.0f}×**" if sp else "– | –"
        refs = f"{ref['estimated_full_seconds']:.0f} | {ref['vs_ours_2']:.0f}×" if ref else "– | –"
        lines.append(
            f"| {r['edges']:,} | {r['items']:,} | {r['graph_build_seconds']:.1f} | {o1s} | {o2['total_seconds']:.1f} | "
            f"{o2['edges_per_s']:.3g} | {o2['intersection_steps']:.3g} | {o2['floor_seconds']:.1f} | {o2['over_floor']:.1f}× | "
            f"{o2['peak_rss_per_actor_bytes'] / mib:.0f} | {sps} | {refs} |"
        )
    lines += [
        "",
        "Notes: 'ours' = `ray_jobs.swing_sharded.run_sharded_swing` (actors with 1 CPU each, fresh actor processes per",
        "run, so actor start-up and numba cache loading are included). The Python reference scores an evenly strided",
        "sample of items; its full time is extrapolated by the sample's share of the estimated work",
        "(`item_work`). Peak RSS per actor is `ru_maxrss` of the actor process: it includes the object-store pages of",
        "the shared CSR the actor touched (mapped, not copied) and ~190 MiB of Ray worker baseline. The machine is",
        "shared with other jobs; the 1-minute load average at the start/end of each size is in the JSON.",
    ]
    lines += ["", "Agreement with ours (same neighbour at the same rank; float32 scores):", ""]
    for r in res["runs"]:
        for name in ("pyspark", "reference"):
            if name in r:
                lines.append(f"- {r['edges']:,} edges, {name}: {r[name]['agreement_with_ours']}")
    lines += ["", "Per-actor detail (2 actors):", ""]
    for r in res["runs"]:
        for s in r["ours_2"]["per_shard"]:
            lines.append(f"- {r['edges']:,} edges, shard {s['shard']}: {s['items']:,} items, {s['chunks']} chunks, "
                         f"{s['seconds']:.1f} s, {s['intersection_steps']:.3g} steps, ru_maxrss {s['ru_maxrss_bytes'] / mib:.0f} MiB, "
                         f"RSS at start {s['rss_at_start_bytes'] / mib:.0f} MiB")
        lines.append(f"- {r['edges']:,} edges: work-estimate imbalance {r['ours_2']['work_estimate_imbalance']:.3f}, "
                     f"object-store put {r['ours_2']['put_seconds']:.2f} s, graph {r['graph_bytes'] / mib:.0f} MiB")
    cm = res["cost_model"]
    lines += ["", "## Two-level plan (replicate user lists per item range), exact costs on the measured graphs", "",
              "| edges | nodes | bytes shipped MiB | replication | max per node MiB | work imbalance |", "|---:|---:|---:|---:|---:|---:|"]
    for r in res["runs"]:
        for n, t in r["two_level"].items():
            lines.append(f"| {r['edges']:,} | {n} | {t['bytes_shuffled'] / mib:.0f} | {t['replication']:.2f} | "
                         f"{t['max_node_bytes'] / mib:.0f} | {t['work_imbalance']:.3f} |")
    lines += ["", "## Cost model", "", f"Model (from the largest measured point): {cm['model']}", ""]
    if "check" in cm:
        c = cm["check"]
        lines.append(f"Check: fitted on {c['fitted_on_edges']:,} edges, predicted {c['predicted_seconds']:.0f} s for "
                     f"{c['predicted_edges']:,} edges on this machine; measured {c['measured_seconds']:.0f} s "
                     f"(measured / predicted = {c['measured_over_predicted']:.2f}).")
    lines += ["", f"Cluster node: {cm['cluster_node']}", "",
              "| edges | plan | nodes | cores | intersection steps | bytes shipped GB | per node GB | wall h | node-hours | core-hours |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for x in cm["extrapolations"]:
        lines.append(f"| {x['edges']:.0e} | {x['plan']} | {x['nodes']} | {x['cores']} | {x['intersection_steps']:.2g} | "
                     f"{x['bytes_shuffled'] / 1e9:.1f} | {x['bytes_per_node'] / 1e9:.1f} | {x['wall_hours']:.3f} | "
                     f"{x['node_hours']:.3f} | {x['core_hours']:.2f} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
