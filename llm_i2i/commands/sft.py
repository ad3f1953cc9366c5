"""Fine-tune the generator or discriminator LLM on a dataset's train split; write an HF checkpoint dir."""

from __future__ import annotations

import argparse
from pathlib import Path

from llm_i2i.progress import log

NAME = "sft"
HELP = "supervised fine-tuning of the generator / discriminator LLM (plain or Ray Train + DeepSpeed)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--role", choices=["generator", "discriminator"], required=True)
    p.add_argument("--data", required=True, help="dataset: canonical dir, S3-Rec dir, RecBole dir, CSV/Parquet, or 'default'")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--config", help="YAML with SFTConfig fields (top level, or under a section 'sft')")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. alpha=1.0, num_workers=2, model.hidden_size=256 (repeatable)")


def run(args: argparse.Namespace) -> int:
    from llm_i2i.commands._common import load_command_config
    from llm_i2i.llm.sft import SFTConfig, run_sft

    cfg = load_command_config(SFTConfig, args, "sft", [f"role={args.role}"])
    runner = None
    if cfg.distributed:
        from ray_jobs.train_llm import RaySFTRunner

        runner = RaySFTRunner()
    out = run_sft(cfg, Path(args.data), Path(args.out), runner)
    if out is None:
        log.info(f"stopped early as asked; run the same command again to resume into {args.out}")
        return 0
    log.info(f"wrote {out}")
    return 0
