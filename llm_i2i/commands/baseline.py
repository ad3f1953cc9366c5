"""Train an I2I backbone on the leave-one-out split, evaluate it, print the table, write DIR/metrics.json."""

from __future__ import annotations

import argparse
import time

from llm_i2i.commands._common import add_model_arguments, fit_backbone
from llm_i2i.data import DataError, leave_one_out, load_dataset
from llm_i2i.data.sequences import real_items_per_user
from llm_i2i.eval.evaluate import evaluate_neighbors, format_table
from llm_i2i.eval.protocol import PRESETS, EvalConfig
from llm_i2i.index.store import write_index
from llm_i2i.io import write_json
from llm_i2i.progress import log

NAME = "baseline"
HELP = "fit + evaluate one I2I backbone without augmentation (metrics.json)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="default", help="dataset path (S3-Rec dir, RecBole dir, CSV/Parquet) or 'default'")
    add_model_arguments(p)
    p.add_argument("--eval-preset", choices=sorted(PRESETS), default="paper", help="evaluation protocol preset")
    p.add_argument("--eval-set", action="append", default=[], metavar="KEY=VALUE", help="override an EvalConfig field")
    p.add_argument("--out", required=True, help="output directory")


def run(args: argparse.Namespace) -> int:
    from llm_i2i.config import parse_overrides

    eval_cfg = EvalConfig.from_preset(args.eval_preset, **parse_overrides(args.eval_set))
    t0 = time.perf_counter()
    ds = load_dataset(args.data)
    seqs = ds.sequences()
    if real_items_per_user(ds.interactions, seqs, args.data) is not None:
        raise DataError(f"{args.data}: field 'source' marks synthetic interactions; a baseline holds out each user's "
                        "last real items, so give it the real interactions only (`llm-i2i run` evaluates augmented data)")
    split = leave_one_out(seqs)
    log.info(f"dataset {ds.name}: {split.report()}")
    valid_targets = split.targets("valid")
    neighbors, info = fit_backbone(args, split.train, valid_targets)
    metrics = evaluate_neighbors(neighbors, split, eval_cfg)
    print(f"\n{ds.name} / {args.model} / preset={eval_cfg.preset} split={eval_cfg.split}\n")
    print(format_table(metrics, eval_cfg.ks))
    write_index(neighbors, f"{args.out}/index", {**info, "dataset": ds.name})
    write_json(
        {**metrics, "dataset": ds.name, "split_report": split.report(), "data_report": ds.report, **info,
         "total_seconds": time.perf_counter() - t0},
        f"{args.out}/metrics.json",
    )
    log.info(f"wrote {args.out}/metrics.json")
    return 0
