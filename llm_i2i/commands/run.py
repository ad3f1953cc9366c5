"""`llm-i2i run`: the whole LLM-I2I pipeline on a local Ray (or a cluster with --address), with a report."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "run"
HELP = "run the whole pipeline (prepare -> SFT -> generate -> discriminate -> fuse -> I2I -> index -> evaluate)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from llm_i2i.pipeline.jobs import add_pipeline_arguments

    add_pipeline_arguments(p)


def default_config(config: str | None, data: str | None) -> str | None:
    """The config file a run uses. The quickstart's small budget is sized for the embedded data only, so
    `--data DIR` alone gets the library defaults: an SFT budget that adapts to the data (early stopping on
    validation) and the `auto` cut. An installed wheel has no configs/ and always uses the defaults."""
    quickstart = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
    if config is None and data in (None, "default") and quickstart.exists():
        return str(quickstart)
    return config


def run(args: argparse.Namespace) -> int:

    from llm_i2i.pipeline.artifacts import ArtifactStore
    from llm_i2i.pipeline.jobs import pipeline_config
    from ray_jobs.runners import run_pipeline_job

    args.config = default_config(args.config, args.data)
    cfg = pipeline_config(args)
    with ArtifactStore(args.out).locked():  # before Ray starts: a second run on this --out stops at once
        run_pipeline_job(cfg, args.out, args.address)
    print(f"\nreport: {args.out}/report.md (json: {args.out}/report.json, plots: {args.out}/plots/)")
    return 0
