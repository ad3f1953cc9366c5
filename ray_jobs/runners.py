"""The Ray runners the library is handed, and the entry point every `ray_jobs/<stage>.py` shares.

    ray job submit --working-dir . -- python -m ray_jobs.pipeline --config configs/quickstart.yaml --out /shared/run

The driver joins the cluster through `--address` / RAY_ADDRESS (a local Ray on 127.0.0.1 otherwise), refuses
a storage root that other nodes cannot read, then runs the stage(s) with `real_llm_ops(ray_runners())`.
"""

from __future__ import annotations

import argparse

from llm_i2i.llm.runners import Runners
from llm_i2i.pipeline.config import PipelineConfig
from llm_i2i.progress import log, setup_logging


def ray_runners() -> Runners:
    """Batch inference on Ray Data actors, SFT on Ray Train workers."""
    from ray_jobs.batch_inference import map_with_engine
    from ray_jobs.train_llm import RaySFTRunner

    return Runners(batch_inference=map_with_engine, sft=RaySFTRunner())


def run_pipeline_job(cfg: PipelineConfig, out: str, address: str | None, stage: str | None = None) -> None:
    """Join Ray, check the storage root, run one stage (or all of them, `stage=None`) with the Ray runners."""
    from llm_i2i.pipeline.jobs import ray_map
    from llm_i2i.pipeline.runner import run_pipeline, run_stage
    from llm_i2i.pipeline.stages import real_llm_ops
    from llm_i2i.raycluster import check_storage_root, init_ray

    init_ray(address or cfg.ray_address, num_cpus=cfg.num_cpus)
    check_storage_root(out, cfg.shared_storage)
    ops, map_fn = real_llm_ops(ray_runners()), ray_map(cfg.cpus_per_fit)
    if stage is None:
        run_pipeline(cfg, out, ops, map_fn=map_fn)
    else:
        r = run_stage(stage, cfg, out, ops, map_fn=map_fn)
        log.info(f"[{stage}] {'skipped (already done)' if r.skipped else 'finished'}: {r.artifact.path}")


def stage_main(stage: str | None, argv: list[str] | None = None) -> int:
    """`python -m ray_jobs.<stage> --config X --out DIR`; stage None = the whole pipeline."""
    from llm_i2i.pipeline.jobs import add_pipeline_arguments, pipeline_config

    setup_logging()
    p = argparse.ArgumentParser(prog=f"ray_jobs.{stage or 'pipeline'}")
    add_pipeline_arguments(p)
    args = p.parse_args(argv)
    try:
        run_pipeline_job(pipeline_config(args), args.out, args.address, stage)
    except (ValueError, FileNotFoundError) as e:  # DataError / ConfigError / a storage root others cannot read
        log.error(f"ray_jobs.{stage or 'pipeline'}: {e}")
        return 2
    return 0
