"""Entry-point glue for `ray_jobs/<stage>.py` and `llm-i2i run`: args, config, Ray, fan-out of I2I fits.

Under `ray job submit` the driver finds the cluster through RAY_ADDRESS; otherwise a local Ray is started
on 127.0.0.1. Fits run as Ray tasks with `cpus_per_fit` CPUs each (fractional on small machines).
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Callable, Iterable

from llm_i2i.config import load_config
from llm_i2i.pipeline.config import PipelineConfig
from llm_i2i.progress import Progress, log, setup_logging


def add_pipeline_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="pipeline YAML (configs/quickstart.yaml, configs/beauty.yaml, ...)")
    p.add_argument("--data", help="dataset path or 'default' (overrides the config's `data`)")
    p.add_argument("--out", required=True, help="output root: a directory or a pyarrow filesystem URI (s3://...)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. fuse.threshold=0.99 (repeatable)")
    p.add_argument("--address", help="Ray address ('auto' = running cluster); default: RAY_ADDRESS or a local Ray")


def pipeline_config(args: argparse.Namespace) -> PipelineConfig:
    overrides = list(args.set)
    if args.data:
        overrides.append(f"data={args.data}")
    return load_config(PipelineConfig, args.config, overrides)


def init_ray(cfg: PipelineConfig, address: str | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    address = address or cfg.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=cfg.num_cpus or os.cpu_count(), include_dashboard=False,
                 _node_ip_address="127.0.0.1", log_to_driver=False)
    log.info(f"Ray: {ray.cluster_resources()}")


def ray_map(num_cpus: float) -> Callable[[Callable[..., Any], Iterable[tuple]], list]:
    """A `map_fn` for `train_i2i`: one Ray task per fit, results in submission order, progress as they land."""

    def run(fn: Callable[..., Any], args: Iterable[tuple]) -> list:
        import ray

        remote = ray.remote(num_cpus=num_cpus)(fn)
        refs = [remote.remote(*a) for a in args]
        prog = Progress(len(refs), "I2I fits", "fits", every_s=0)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            prog.update(len(done))
        prog.close()
        return ray.get(refs)

    return run


def stage_main(stage: str | None, argv: list[str] | None = None, ops: Any = None) -> int:
    """`python -m ray_jobs.<stage> --config X --out DIR`; stage None = the whole pipeline. `ops`: the pipeline's
    `LLMOps` (the Ray jobs pass ones bound to the Ray SFT runner)."""
    from llm_i2i.pipeline.runner import run_pipeline, run_stage

    setup_logging()
    p = argparse.ArgumentParser(prog=f"ray_jobs.{stage or 'pipeline'}")
    add_pipeline_arguments(p)
    args = p.parse_args(argv)
    cfg = pipeline_config(args)
    init_ray(cfg, args.address)
    map_fn = ray_map(cfg.cpus_per_fit)
    if stage is None:
        run_pipeline(cfg, args.out, ops, map_fn=map_fn)
    else:
        r = run_stage(stage, cfg, args.out, ops, map_fn=map_fn)
        log.info(f"[{stage}] {'skipped (already done)' if r.skipped else 'finished'}: {r.artifact.path}")
    return 0
