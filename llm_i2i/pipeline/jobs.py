"""Entry-point glue for `ray_jobs/<stage>.py` and `llm-i2i run`: arguments, config, fan-out of I2I fits.

The driver joins Ray through `llm_i2i.raycluster.init_ray` (RAY_ADDRESS under `ray job submit`; otherwise a
local Ray on 127.0.0.1); `ray_jobs.runners.run_pipeline_job` wires the rest. Fits run as Ray tasks with
`cpus_per_fit` CPUs each (fractional on small machines).
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Iterable

from llm_i2i.config import load_config
from llm_i2i.pipeline.artifacts import call_materialized, portable
from llm_i2i.pipeline.config import PipelineConfig
from llm_i2i.progress import Progress


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


def ray_map(num_cpus: float) -> Callable[[Callable[..., Any], Iterable[tuple]], list]:
    """A `map_fn` for `train_i2i`: one Ray task per fit, results in submission order, progress as they land."""

    def run(fn: Callable[..., Any], args: Iterable[tuple]) -> list:
        import ray

        remote = ray.remote(num_cpus=num_cpus)(call_materialized)
        refs = [remote.remote(fn, *portable(tuple(a))) for a in args]  # each node reads its own copy of the inputs
        prog = Progress(len(refs), "I2I fits", "fits", every_s=0)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            prog.update(len(done))
        prog.close()
        return ray.get(refs)

    return run
