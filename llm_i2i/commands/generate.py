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
    return report(run_generate(cfg, args.checkpoint, args.data, args.out))
