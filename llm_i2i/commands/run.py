"""`llm-i2i run`: the whole LLM-I2I pipeline on a local Ray (or a cluster with --address), with a report."""

from __future__ import annotations

import argparse

NAME = "run"
HELP = "run the whole pipeline (prepare -> SFT -> generate -> discriminate -> fuse -> I2I -> index -> evaluate)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from llm_i2i.pipeline.jobs import add_pipeline_arguments

    add_pipeline_arguments(p)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from llm_i2i.pipeline.artifacts import ArtifactStore
    from llm_i2i.pipeline.jobs import pipeline_config
    from ray_jobs.runners import run_pipeline_job

    quickstart = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
    if args.config is None and quickstart.exists():  # a source checkout; an installed wheel uses the defaults
        args.config = str(quickstart)
    cfg = pipeline_config(args)
    with ArtifactStore(args.out).locked():  # before Ray starts: a second run on this --out stops at once
        run_pipeline_job(cfg, args.out, args.address)
    print(f"\nreport: {args.out}/report.md (json: {args.out}/report.json, plots: {args.out}/plots/)")
    return 0
