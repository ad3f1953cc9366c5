"""Score (user, item) pairs with the discriminator LLM: adds `confidence` = P(Yes) over Yes/No."""

from __future__ import annotations

import argparse

from llm_i2i.commands._common import load_command_config
from llm_i2i.commands.generate import add_inference_arguments, batch_runner, report

NAME = "discriminate"
HELP = "add a confidence column (P(Yes)) to a Parquet file of (user_id, item_id[, position]) pairs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_inference_arguments(p)
    p.add_argument("--pairs", required=True,
                   help="Parquet with user_id, item_id (other columns kept; a 'position' column marks real interactions)")


def run(args: argparse.Namespace) -> int:
    from llm_i2i.llm.discriminate import DiscriminateConfig, run_discriminate

    cfg = load_command_config(DiscriminateConfig, args, args.command)
    runner = batch_runner(cfg, args, args.checkpoint, args.data, args.pairs, args.out)
    return report(run_discriminate(cfg, args.checkpoint, args.data, args.pairs, args.out, runner))
