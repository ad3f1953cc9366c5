"""The execution back ends the LLM library is handed, so that it never imports `ray_jobs` (which imports it).

`ray_jobs.runners.ray_runners()` supplies the Ray ones; the command line and the Ray jobs wire them into
`run_generate` / `run_discriminate` / the pipeline's `real_llm_ops`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

import pyarrow as pa

from llm_i2i.llm.inference import EngineSpec

if TYPE_CHECKING:  # the SFT stack (torch, transformers) loads only where SFT runs
    from llm_i2i.llm.sft import SFTRunner


class BatchRunner(Protocol):
    """Apply `batch_fn(engine, batch, **batch_kwargs)` to every `batch_size` rows of `table` on engines built
    from `spec` (`num_actors` workers of `actor_num_cpus` CPUs and `num_gpus` GPUs each, None = the cluster's
    default; `num_actors=0` = in this process; streaming starts once all of them are up, failing after
    `actor_start_timeout_s`, 0 = on the first), write the `schema` output to `out_path` atomically and return
    {rows_out, error_rows, errors_by_kind, seconds}. Output batches carry an `error` column (null = ok); past
    `max_error_fraction` errored units the run fails and writes nothing."""

    def __call__(self, table: pa.Table, batch_fn: Callable[..., pa.Table], batch_kwargs: dict[str, Any],
                 spec: EngineSpec, schema: pa.Schema, out_path: str | Path, *, num_actors: int,
                 actor_num_cpus: float, num_gpus: float | None, batch_size: int, actor_start_timeout_s: int = 0,
                 units_of: Callable[[pa.Table], int] | None = None, max_error_fraction: float = 1.0,
                 desc: str = "inference",
                 unit: str = "rows") -> dict[str, Any]: ...


@dataclass
class Runners:
    """Where the pipeline's heavy LLM work runs: `batch_inference` for generate/discriminate, `sft` for
    fine-tuning and the evaluations that load a model (`llm_i2i.llm.sft.SFTRunner`; None: this process)."""

    batch_inference: BatchRunner
    sft: SFTRunner | None = None
