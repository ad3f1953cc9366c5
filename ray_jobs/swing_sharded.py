"""Sharded Swing on Ray actors.

The graph's CSR arrays are `ray.put` once; every actor maps them zero-copy from the object store.
Items are cut into work-balanced contiguous ranges (`llm_i2i.i2i.swing_shards.plan_shards`), one per
actor; each actor runs the numba kernel chunk by chunk (bounded items and work per chunk) and streams
every chunk as one Parquet row group into its part file, so its memory is the mapped CSR plus one
chunk's [items x k] buffers. The driver concatenates the parts (in item order) row group by row
group into `neighbors.parquet`, schema `llm_i2i.i2i.base.NEIGHBORS_SCHEMA`, plus `manifest.json`.

    python -m ray_jobs.swing_sharded --interactions FILE.parquet --shards 2 --out DIR [--set k=100]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from llm_i2i.i2i.base import NEIGHBORS_SCHEMA, Neighbors
from llm_i2i.i2i.swing import SwingConfig, SwingGraph, SwingScratch, build_graph, item_work, swing_topk
from llm_i2i.i2i.swing_shards import chunk_ranges, plan_shards
from llm_i2i.io import atomic_dir, atomic_path, sha256_file, write_json
from llm_i2i.progress import log
from llm_i2i.raycluster import init_ray

GRAPH_ARRAYS = ("user_indptr", "user_items", "item_indptr", "item_users", "user_weight")


def chunk_table(todo: np.ndarray, idx: np.ndarray, sc: np.ndarray, item_ids: np.ndarray) -> pa.Table:
    """Kernel output for items `todo` ([n, k], -1 / -inf padded) as neighbour rows."""
    keep = np.isfinite(sc)
    lens = keep.sum(1)
    rank = np.nonzero(keep)[1]  # rows are sorted and padded at the end, so column = rank
    return pa.table(
        {
            "item_id": np.repeat(item_ids[todo], lens),
            "neighbor_id": item_ids[idx[keep]],
            "score": sc[keep].astype(np.float32),
            "rank": rank.astype(np.int32),
        },
        schema=NEIGHBORS_SCHEMA,
    )


@ray.remote
class SwingShard:
    """One shard: maps the shared CSR and scores a contiguous item range into a Parquet part."""

    def __init__(self, refs: dict):
        self._start_rss = _rss_bytes()
        arrays = {name: ray.get(ref) for name, ref in refs.items()}  # zero-copy, read-only views
        self.item_ids = arrays.pop("item_ids")
        self.graph = SwingGraph(**arrays, n_items=len(self.item_ids), report={})
        self.scratch = SwingScratch(self.graph)  # sized once, reused by every chunk

    def run(self, chunk_bounds: np.ndarray, k: int, alpha2: float, part_path: str) -> dict:
        t0 = time.perf_counter()
        rows = steps = 0
        peak_sampled = _rss_bytes()
        with atomic_path(part_path) as tmp:
            with pq.ParquetWriter(tmp, NEIGHBORS_SCHEMA) as writer:
                for lo, hi in zip(chunk_bounds[:-1], chunk_bounds[1:]):
                    todo = np.arange(lo, hi, dtype=np.int64)
                    idx, sc, st = swing_topk(self.graph, k, alpha2, todo, self.scratch)
                    table = chunk_table(todo, idx, sc, self.item_ids)
                    writer.write_table(table, row_group_size=max(table.num_rows, 1))
                    rows += table.num_rows
                    steps += st
                    peak_sampled = max(peak_sampled, _rss_bytes())
        return {
            "items": int(chunk_bounds[-1] - chunk_bounds[0]),
            "chunks": int(len(chunk_bounds) - 1),
            "rows": rows,
            "intersection_steps": steps,
            "seconds": time.perf_counter() - t0,
            "rss_at_start_bytes": self._start_rss,
            "rss_peak_sampled_bytes": peak_sampled,
            "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }


def _rss_bytes() -> int:
    """Resident set size now (Linux /proc; includes the object-store pages this process touched)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def put_graph(graph: SwingGraph, item_ids: np.ndarray) -> dict:
    """One `ray.put` per CSR array (and the external item ids); actors receive the refs nested in a
    dict, so Ray does not resolve them into copies in the call, and map them themselves."""
    refs = {name: ray.put(np.ascontiguousarray(getattr(graph, name))) for name in GRAPH_ARRAYS}
    refs["item_ids"] = ray.put(np.asarray(item_ids, np.int64))
    return refs


def run_sharded_swing(
    graph: SwingGraph,
    item_ids: np.ndarray,
    n_shards: int,
    out_dir: str | Path,
    k: int,
    alpha2: float,
    chunk_items: int = 8192,
    chunk_work: float = 2e8,
    cpus_per_shard: float | None = None,
    manifest: dict | None = None,
) -> dict:
    """Score every item of `graph` on `n_shards` actors; write `out_dir/neighbors.parquet` and
    `manifest.json` atomically. Ray must be initialised. Returns the run's stats."""
    t0 = time.perf_counter()
    work = item_work(graph)
    plan = plan_shards(graph, n_shards, work)
    refs = put_graph(graph, item_ids)
    t_put = time.perf_counter() - t0
    cpus = cpus_per_shard if cpus_per_shard is not None else max(0.25, ray.available_resources().get("CPU", 1) / n_shards)
    log.info(f"swing: {graph.n_items} items, {graph.n_edges} edges on {n_shards} shards (imbalance {plan.imbalance:.3f})")
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        actors = [SwingShard.options(num_cpus=cpus).remote(refs) for _ in range(n_shards)]
        parts, pending = [], {}
        for s, actor in enumerate(actors):
            lo, hi = int(plan.bounds[s]), int(plan.bounds[s + 1])
            part = tmp / "parts" / f"part-{s:05d}.parquet"
            parts.append(part)
            bounds = chunk_ranges(work, lo, hi, chunk_items, chunk_work)
            pending[actor.run.remote(bounds, k, alpha2, str(part))] = s
        shard_stats: list[dict] = [{} for _ in actors]
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            s = pending.pop(done[0])
            shard_stats[s] = {"shard": s, **ray.get(done[0])}
            log.info(f"swing shard {s} done: {shard_stats[s]['items']} items in {shard_stats[s]['seconds']:.1f}s "
                     f"({n_shards - len(pending)}/{n_shards})")
        for a in actors:
            ray.kill(a)
        t_compute = time.perf_counter() - t0 - t_put
        rows = concat_parts(parts, tmp / "neighbors.parquet")
        for p in parts:
            p.unlink()
        (tmp / "parts").rmdir()
        stats = {
            "shards": n_shards,
            "cpus_per_shard": cpus,
            "items": graph.n_items,
            "edges": graph.n_edges,
            "k": k,
            "rows": rows,
            "intersection_steps": int(sum(s["intersection_steps"] for s in shard_stats)),
            "work_estimate_imbalance": plan.imbalance,
            "put_seconds": t_put,
            "compute_seconds": t_compute,
            "total_seconds": time.perf_counter() - t0,
            "per_shard": shard_stats,
        }
        from llm_i2i.index.store import INDEX_FORMAT_VERSION

        write_json(
            {
                "format_version": INDEX_FORMAT_VERSION,
                "created_unix": time.time(),
                "items": graph.n_items,
                "rows": rows,
                "k": k,
                "neighbors_sha256": sha256_file(tmp / "neighbors.parquet"),
                "swing_sharded": stats,
                **(manifest or {}),
            },
            tmp / "manifest.json",
        )
    return stats


class RaySwingRunner:
    """`Swing`'s sharded path on a Ray cluster: one shard per cluster CPU (or `shards`), the index read back
    from the job's Parquet. Joins the running Ray session, or starts one at `address` and stops it after."""

    def __init__(self, address: str | None = None, shards: int | None = None):
        self.address = address
        self.shards = shards

    def __call__(self, graph: SwingGraph, item_ids: np.ndarray, k: int, alpha2: float) -> tuple[Neighbors, dict]:
        import tempfile

        started = not ray.is_initialized()
        if started:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        try:
            shards = self.shards or max(1, int(ray.cluster_resources().get("CPU", 1)))
            with tempfile.TemporaryDirectory(prefix="swing_sharded_") as tmp:
                stats = run_sharded_swing(graph, item_ids, shards, Path(tmp) / "index", k, alpha2)
                table = pq.read_table(Path(tmp) / "index" / "neighbors.parquet")
        finally:
            if started:
                ray.shutdown()
        return Neighbors.from_table(table, np.asarray(item_ids, np.int64)), stats


def concat_parts(parts: list[Path], out: Path) -> int:
    """Stream the parts' row groups into one file, in part order (= item order)."""
    rows = 0
    with pq.ParquetWriter(out, NEIGHBORS_SCHEMA) as writer:
        for part in parts:
            f = pq.ParquetFile(part)
            for g in range(f.num_row_groups):
                table = f.read_row_group(g)
                if table.num_rows:
                    writer.write_table(table, row_group_size=table.num_rows)
                    rows += table.num_rows
    return rows


def main(argv: list[str] | None = None) -> int:
    from llm_i2i.config import load_config, to_dict
    from llm_i2i.data.sequences import sequences_from_interactions

    p = argparse.ArgumentParser(prog="python -m ray_jobs.swing_sharded", description=__doc__.split("\n\n")[0])
    p.add_argument("--interactions", required=True, help="Parquet with user_id, item_id, timestamp columns")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--out", required=True, help="output directory (neighbors.parquet + manifest.json)")
    p.add_argument("--config", help="YAML with SwingConfig fields")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--chunk-items", type=int, default=8192)
    p.add_argument("--num-cpus", type=int, default=None, help="local cluster size (default: all cores)")
    p.add_argument("--address", help="Ray address ('auto' joins a running cluster); default: RAY_ADDRESS, else a "
                                     "local Ray on 127.0.0.1")
    args = p.parse_args(argv)
    if args.shards < 1:
        p.error("--shards must be >= 1")
    cfg = load_config(SwingConfig, args.config, args.set)
    cfg.validate()
    path = Path(args.interactions)
    table = pq.read_table(path, columns=["user_id", "item_id", "timestamp"])
    seqs = sequences_from_interactions(table)
    log.info(f"{path}: {seqs.n_users} users, {seqs.n_items} items, {int(seqs.indptr[-1])} interactions")
    graph = build_graph(seqs, cfg)
    started = not ray.is_initialized()
    if started:
        init_ray(args.address, num_cpus=args.num_cpus)
    try:
        stats = run_sharded_swing(graph, seqs.item_ids, args.shards, args.out, cfg.k, cfg.alpha2,
                                  chunk_items=args.chunk_items,
                                  manifest={"backbone": "swing", "backbone_config": to_dict(cfg),
                                            "source": str(path), "graph_report": graph.report})
    finally:
        if started:
            ray.shutdown()
    log.info(f"wrote {args.out}/neighbors.parquet: {stats['rows']} rows in {stats['total_seconds']:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
