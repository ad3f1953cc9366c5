"""Ray Data wiring for LLM batch inference: request table -> engine actors -> one Parquet file.

The per-batch work is a plain function `batch_fn(engine, batch: pa.Table, **kwargs) -> pa.Table`
(`generate_batch`, `discriminate_batch`); this module only moves batches: `from_arrow` ->
`map_batches(EngineActor, compute=ActorPoolStrategy(size=num_actors), num_cpus=actor_num_cpus, num_gpus=...)` -> stream the
results into a Parquet file written atomically, logging rows/s and ETA. `map_with_engine` is the library's
`BatchRunner` (`llm_i2i.llm.runners`). GPUs per actor are declared (config `num_gpus`), defaulting to 1 when
the cluster declares GPUs, never read from the driver's CUDA. `num_actors=0` runs the same function in this
process without Ray: the in-process reference the benchmark and tests compare against.

Failure limits: rows that come back with `error` set are counted; once more than `max_error_fraction` of the
input rows have errored the run stops with `ErrorBudgetExceeded` (the counts in its message) and the output file
is never moved into place, so the stage is not committed and nothing caches it. A crashed actor is restarted at
most `MAX_ACTOR_RESTARTS` times and a batch retried at most `MAX_TASK_RETRIES` times (Ray Data's default is
unbounded: a checkpoint that kills its actor would loop forever).
"""

from __future__ import annotations

import collections
import math
import time
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from llm_i2i.io import atomic_path
from llm_i2i.llm.inference import EngineSpec
from llm_i2i.pipeline.artifacts import materialize, portable
from llm_i2i.progress import Progress, log
from llm_i2i.raycluster import gpus_per_actor, init_ray

MAX_ACTOR_RESTARTS = 3
MAX_TASK_RETRIES = 2


class ErrorBudgetExceeded(RuntimeError):
    """Too many rows errored for the output to be worth keeping."""


class EngineActor:
    """Ray Data callable class: loads the checkpoint once (on the GPU Ray assigned it, if any), then applies
    `batch_fn` to every batch."""

    def __init__(self, spec: EngineSpec, batch_fn: Callable[..., pa.Table], batch_kwargs: dict[str, Any]):
        import ray

        spec, batch_kwargs = materialize((spec, batch_kwargs))  # a URI root's checkpoint: this node's own copy
        self.engine = spec.build(gpu_assigned=bool(ray.get_gpu_ids()))
        self.batch_fn, self.batch_kwargs = batch_fn, batch_kwargs

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self.batch_fn(self.engine, batch, **self.batch_kwargs)


def _batches_in_process(table: pa.Table, spec: EngineSpec, batch_fn, batch_kwargs, batch_size: int):
    engine = spec.build()
    for start in range(0, table.num_rows, batch_size):
        yield batch_fn(engine, table.slice(start, batch_size), **batch_kwargs)


def _batches_on_ray(table: pa.Table, spec: EngineSpec, batch_fn, batch_kwargs, num_actors: int,
                    actor_num_cpus: float, num_gpus: float, batch_size: int, actor_start_timeout_s: int):
    import ray

    # one block per batch so every actor gets work from the start; order is kept for reproducible files
    ds = ray.data.from_arrow(table).repartition(max(1, math.ceil(table.num_rows / batch_size)))
    ds.context.execution_options.preserve_order = True
    # the whole pool first: otherwise a stage whose GPUs are still being freed (Ray Train's placement groups go
    # asynchronously) streams every batch through the first actor up while the others wait
    ds.context.wait_for_min_actors_s = actor_start_timeout_s
    ds = ds.map_batches(
        EngineActor,
        fn_constructor_kwargs=dict(spec=portable(spec), batch_fn=batch_fn, batch_kwargs=portable(batch_kwargs)),
        compute=ray.data.ActorPoolStrategy(size=num_actors), num_cpus=actor_num_cpus, num_gpus=num_gpus,
        batch_size=batch_size, batch_format="pyarrow",
        # Ray 2.60 has no named parameter for these yet: passed as ray_remote_args, which it warns are deprecated
        max_restarts=MAX_ACTOR_RESTARTS, max_task_retries=MAX_TASK_RETRIES,
    )
    yield from ds.iter_batches(batch_size=None, batch_format="pyarrow")


def map_with_engine(table: pa.Table, batch_fn: Callable[..., pa.Table], batch_kwargs: dict[str, Any],
                    spec: EngineSpec, schema: pa.Schema, out_path: str | Path, *, num_actors: int,
                    actor_num_cpus: float, num_gpus: float | None = None, batch_size: int,
                    actor_start_timeout_s: int = 0, units_of: Callable[[pa.Table], int] | None = None, max_error_fraction: float = 1.0,
                    desc: str = "inference", unit: str = "rows") -> dict[str, Any]:
    """Apply `batch_fn` to every batch of `table` and write the concatenated output to `out_path`.

    Output batches must follow `schema` and carry an `error` column (null = ok); errors are counted by
    their kind (text before the first ':'). A failed input row gives one error row, so the error fraction is
    error rows / input rows; past `max_error_fraction` this raises `ErrorBudgetExceeded` as soon as that is
    certain, and `out_path` is left untouched. `units_of(out_batch)` counts progress units (default: rows of
    `table` are assumed 1:1 with output rows).
    """
    units_of = units_of or (lambda b: b.num_rows)
    if num_actors == 0:
        batches = _batches_in_process(table, spec, batch_fn, batch_kwargs, batch_size)
        where = "in-process"
    else:
        init_ray()
        num_gpus = gpus_per_actor(num_gpus)
        batches = _batches_on_ray(table, spec, batch_fn, batch_kwargs, num_actors, actor_num_cpus, num_gpus,
                                  batch_size, actor_start_timeout_s)
        where = f"{num_actors} Ray actor(s) x {actor_num_cpus} CPU x {num_gpus:g} GPU"
    log.info(f"{desc}: {table.num_rows} {unit} through {spec.kind} engine on {where}, batch {batch_size}")
    progress = Progress(table.num_rows, desc, unit)
    rows_out, errors = 0, collections.Counter()
    t0 = time.perf_counter()
    with atomic_path(out_path) as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            for batch in batches:
                batch = batch.cast(schema) if batch.schema != schema else batch
                writer.write_table(batch)
                rows_out += batch.num_rows
                for e in batch.column("error").drop_null().to_pylist():
                    errors[e.split(":", 1)[0]] += 1
                progress.update(units_of(batch), errors=sum(errors.values()))
                if sum(errors.values()) > max_error_fraction * table.num_rows:
                    progress.close()
                    raise ErrorBudgetExceeded(
                        f"{desc}: {sum(errors.values())} of {table.num_rows} {unit} errored (more than "
                        f"max_error_fraction={max_error_fraction:g}); by kind: {dict(errors)}. Nothing was written "
                        f"to {out_path}")
    seconds = time.perf_counter() - t0
    progress.close()
    if errors:
        log.warning(f"{desc}: {sum(errors.values())} error row(s): {dict(errors)}")
    return {"rows_out": rows_out, "error_rows": sum(errors.values()), "errors_by_kind": dict(errors),
            "seconds": seconds}
