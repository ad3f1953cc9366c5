"""Generate synthetic interactions: each user's recent items -> the generator LLM's top-N next items."""

from __future__ import annotations

import argparse
import json

from llm_i2i.commands._common import load_command_config
from llm_i2i.progress import log

NAME = "generate"
HELP = "write candidates.parquet: top-N synthetic items per user from a generator checkpoint"


def add_inference_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by `generate` and `discriminate`."""
    p.add_argument("--checkpoint", required=True, help="llm-i2i checkpoint directory (from `sft`)")
    p.add_argument("--data", required=True, help="canonical dataset directory (or any path `load_dataset` reads)")
    p.add_argument("--out", required=True, help="output Parquet file")
    p.add_argument("--config", help="YAML with the config's fields (top level, or under a section named like the command)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field (repeatable)")
    p.add_argument("--address", help="Ray address ('auto' = running cluster); default: RAY_ADDRESS or a local Ray")
    p.add_argument("--shared-storage", action="store_true",
                   help="--checkpoint/--data/--out are on a mount every node sees (required on a multi-node cluster)")


def batch_runner(cfg, args: argparse.Namespace, *paths: str):
    """The Ray batch runner, with Ray joined (`--address` / RAY_ADDRESS) unless the config runs in-process."""
    from llm_i2i.raycluster import check_storage_root, init_ray
    from ray_jobs.batch_inference import map_with_engine

    if cfg.num_actors > 0:
        init_ray(args.address)
        for path in paths:
            check_storage_root(path, args.shared_storage)
    return map_with_engine


def report(stats: dict) -> int:
    print(json.dumps(stats, indent=2, default=str))
    if stats["error_rows"]:
        log.warning(f"{stats['error_rows']} row(s) carry an error (see the 'error' column): {stats['errors_by_kind']}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_inference_arguments(p)


def run(args: argparse.Namespace) -> int:
    from llm_i2i.llm.generate import GenerateConfig, run_generate

    cfg = load_command_config(GenerateConfig, args, args.command)
    runner = batch_runner(cfg, args, args.checkpoint, args.data, args.out)
    return report(run_generate(cfg, args.checkpoint, args.data, args.out, runner))
