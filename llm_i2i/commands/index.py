"""Build an I2I index (top-K neighbours per item) from an interaction file and write DIR/neighbors.parquet."""

from __future__ import annotations

import argparse
import os

from llm_i2i.commands._common import add_model_arguments, fit_backbone
from llm_i2i.data import load_dataset
from llm_i2i.data.sequences import real_items_per_user
from llm_i2i.index.store import write_index
from llm_i2i.progress import log

NAME = "index"
HELP = "build an item-to-item index from your own interactions"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interactions", required=True, help="CSV/Parquet (user,item[,timestamp]), S3-Rec .txt, RecBole dir, or 'default'")
    add_model_arguments(p)
    p.add_argument("--out", required=True, help="output directory")


def run(args: argparse.Namespace) -> int:
    ds = load_dataset(args.interactions)
    seqs = ds.sequences()
    # an augmented table (the pipeline's fuse/dataset) marks its synthetic rows: the backbone weighs them as
    # `llm-i2i run` does (BM25's synthetic_weight), so the same data gives the same index
    n_real = real_items_per_user(ds.interactions, seqs, args.interactions)
    neighbors, info = fit_backbone(args, seqs, runner=sharded_runner(args.model), n_real=n_real)
    out = write_index(neighbors, args.out, {**info, "dataset": ds.name, "data_report": ds.report})
    log.info(f"wrote {out}/neighbors.parquet ({int(neighbors.indptr[-1])} rows, {neighbors.n_items} items)")
    return 0


def sharded_runner(model: str):
    """With RAY_ADDRESS naming a cluster, Swing gets the Ray job as its sharded path and takes it past
    `sharded_min_work` estimated steps; otherwise every fit runs on local threads."""
    address = os.environ.get("RAY_ADDRESS")
    if model != "swing" or not address:
        return None
    from ray_jobs.swing_sharded import RaySwingRunner

    return RaySwingRunner(address)
