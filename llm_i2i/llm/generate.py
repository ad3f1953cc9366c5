"""Synthesise interactions: each user's most recent items -> the generator's top-N next items.

`generate_batch` is the plain core (one engine, one Arrow batch, no Ray); `run_generate` streams all
users through the batch runner it is given (`ray_jobs.batch_inference.map_with_engine`: Ray Data actors)
and writes `candidates.parquet` atomically.
Bad rows (no history, item ids the checkpoint does not know) become one row with `error` set; they are
counted, never fatal. Over-long histories are truncated to the `history_len` most recent items.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from llm_i2i.llm.engine import ENGINES, InferenceEngine
from llm_i2i.llm.inference import EngineSpec
from llm_i2i.llm.runners import BatchRunner

CANDIDATES_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64()),
        pa.field("item_id", pa.int64()),  # null on error
        pa.field("rank", pa.int32()),  # 0 = best; null on error
        pa.field("score", pa.float32()),  # log P(item | history) over item tokens; null on error
        pa.field("error", pa.string()),  # null if ok
    ]
)
HISTORY = "history"  # request column: list<int64> of external item ids, oldest first
# more than half the requests errored: the run failed (a checkpoint that does not match the data, an engine that
# raises), rather than a few users with no usable history; it stops with the counts, and the stage is not committed
# (`ray_jobs.batch_inference.ErrorBudgetExceeded`). Set it lower to demand cleaner runs.
DEFAULT_MAX_ERROR_FRACTION = 0.5


@dataclass
class GenerateConfig:
    recall_number: int = 10  # N: synthetic items kept per user
    history_len: int = 10  # the paper conditions on the user's 10 most recent items
    exclude_history: bool = True  # never propose an item the user already has in the prompt
    engine: str = "hf"  # 'hf' | 'vllm'
    batch_size: int = 64  # users per engine call
    num_actors: int = 1  # Ray Data actors; 0 = run in this process without Ray (reference / debugging)
    actor_num_cpus: float = 0.5  # fractional CPUs per actor (Ray Data needs < 1 on a 2-core box)
    actor_start_timeout_s: int = 600  # wait this long for all num_actors actors before streaming; 0 = start on the first
    num_gpus: float | None = None  # GPUs per actor; None = 1 if the Ray cluster declares GPUs, else 0
    torch_threads: int = 0  # intra-op threads per actor; 0 = torch default
    engine_options: dict[str, Any] = field(default_factory=dict)  # e.g. {device: cuda, dtype: bfloat16} or vLLM args
    split: str = "train"  # which history to condition on: 'train' (items[:-2]), 'train_valid', 'full'
    max_users: int | None = None  # first N users only (smoke runs)
    max_error_fraction: float = DEFAULT_MAX_ERROR_FRACTION  # users whose request errored, at most
    # not part of the stage's cache key (`config.result_config`); num_gpus is, as it picks the device and so the numerics
    EXECUTION_ONLY = ("batch_size", "num_actors", "actor_num_cpus", "actor_start_timeout_s", "torch_threads")

    def validate(self) -> None:
        check_error_fraction(self.max_error_fraction)
        if self.recall_number < 1:
            raise ValueError(f"recall_number must be >= 1, got {self.recall_number}")
        if self.history_len < 1:
            raise ValueError(f"history_len must be >= 1, got {self.history_len}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.batch_size < 1 or self.num_actors < 0 or self.actor_num_cpus <= 0 or self.actor_start_timeout_s < 0:
            raise ValueError("batch_size >= 1, num_actors >= 0, actor_num_cpus > 0 and actor_start_timeout_s >= 0 "
                             "are required")
        if self.num_gpus is not None and self.num_gpus < 0:
            raise ValueError(f"num_gpus must be >= 0 (or unset: from the cluster), got {self.num_gpus}")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.max_users is not None and self.max_users < 1:
            raise ValueError(f"max_users must be >= 1, got {self.max_users}")


SPLITS = ("train", "train_valid", "full")


def check_error_fraction(value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"max_error_fraction must be in [0, 1], got {value}")


def split_sequences(seqs, split: str):
    """The per-user history a stage may condition on (`train` hides the valid and test targets)."""
    from llm_i2i.data.split import leave_one_out

    if split == "full":
        return seqs
    loo = leave_one_out(seqs)
    return loo.train if split == "train" else loo.train_valid


def history_requests(seqs, history_len: int, max_users: int | None = None) -> pa.Table:
    """One row per user: user_id and the `history_len` most recent items (external ids, oldest first)."""
    recent = seqs.slice_each(start=-history_len)
    n = seqs.n_users if max_users is None else min(max_users, seqs.n_users)
    indptr = recent.indptr[: n + 1]
    items = recent.item_ids[recent.items[: indptr[-1]]]
    history = pa.ListArray.from_arrays(pa.array(indptr.astype(np.int32)), pa.array(items, pa.int64()))
    return pa.table({"user_id": pa.array(seqs.user_ids[:n], pa.int64()), HISTORY: history})


def check_history(history: Any, engine: InferenceEngine, history_len: int) -> tuple[np.ndarray | None, str | None]:
    """(truncated history, None) or (None, error message) for one request row."""
    if history is None:
        return None, "malformed row: null history"
    h = np.asarray(history, dtype=np.int64)[-history_len:]
    if len(h) == 0:
        return None, "empty history"
    unknown = h[~engine.known_items(h)]
    if len(unknown):
        return None, f"unknown item id(s) {unknown[:5].tolist()} (not in the checkpoint's item vocabulary)"
    return h, None


def call_per_row_on_failure(fn, rows: list[int], *args_per_row) -> tuple[dict[int, Any], dict[int, str]]:
    """Run `fn` on all rows at once; if it raises, retry row by row so one bad row cannot sink a batch.

    Returns ({row: result}, {row: error}). `fn(*lists)` must return one result per row.
    """
    if not rows:
        return {}, {}
    try:
        return dict(zip(rows, fn(*args_per_row))), {}
    except Exception:  # noqa: BLE001 - isolate the culprit below
        pass
    results, errors = {}, {}
    for k, r in enumerate(rows):
        try:
            results[r] = fn(*[[a[k]] for a in args_per_row])[0]
        except Exception as e:  # noqa: BLE001 - a bad row is reported in its error column
            errors[r] = f"engine error: {type(e).__name__}: {e}"
    return results, errors


def generate_batch(engine: InferenceEngine, batch: pa.Table, recall_number: int, exclude_history: bool,
                   history_len: int) -> pa.Table:
    """Top-N candidates for every request row of `batch` (user_id, history) -> CANDIDATES_SCHEMA rows."""
    users = batch.column("user_id").to_pylist()
    histories = batch.column(HISTORY).to_pylist()
    good, errors, clean = [], {}, []
    for r, (u, h) in enumerate(zip(users, histories)):
        if u is None:
            errors[r] = "malformed row: null user_id"
            continue
        h, err = check_history(h, engine, history_len)
        if err:
            errors[r] = err
        else:
            good.append(r)
            clean.append(h)

    def top(hs):
        t = engine.top_items(hs, recall_number, exclude_history)
        return list(zip(t.item_ids, t.scores))

    results, failed = call_per_row_on_failure(top, good, clean)
    errors.update(failed)
    out_user, out_item, out_rank, out_score, out_err = [], [], [], [], []
    for r in range(len(users)):
        if r in errors:
            out_user.append(users[r]), out_item.append(None), out_rank.append(None)
            out_score.append(None), out_err.append(errors[r])
            continue
        items, scores = results[r]
        k = len(items)
        out_user += [users[r]] * k
        out_item += items.tolist()
        out_rank += list(range(k))
        out_score += np.asarray(scores, np.float32).tolist()
        out_err += [None] * k
    return pa.table([pa.array(out_user, pa.int64()), pa.array(out_item, pa.int64()), pa.array(out_rank, pa.int32()),
                     pa.array(out_score, pa.float32()), pa.array(out_err, pa.string())], schema=CANDIDATES_SCHEMA)


def engine_spec(cfg, checkpoint_dir: str | Path, items=None) -> EngineSpec:
    """The EngineSpec a stage config (GenerateConfig or DiscriminateConfig) asks for.

    With `items`, titles go into the prompts when the checkpoint was fine-tuned with them.
    """
    from llm_i2i.llm.inference import checkpoint_titles

    threads = {"torch_threads": cfg.torch_threads} if cfg.engine == "hf" and cfg.torch_threads else {}
    titles = checkpoint_titles(checkpoint_dir, items) if items is not None else None
    return EngineSpec(cfg.engine, str(checkpoint_dir), {**threads, **({"titles": titles} if titles else {}),
                                                        **cfg.engine_options})


def users_in(table: pa.Table) -> int:
    """Progress unit for candidate batches: each user's rows come out of one engine call together."""
    return pc.count_distinct(table.column("user_id")).as_py() if table.num_rows else 0


def run_generate(cfg: GenerateConfig, checkpoint_dir: str | Path, dataset_dir: str | Path,
                 out_path: str | Path, runner: BatchRunner) -> dict[str, Any]:
    """Generate candidates for every user of the canonical dataset in `dataset_dir`; write `out_path`."""
    from llm_i2i.data import load_dataset

    cfg.validate()
    t0 = time.perf_counter()
    ds = load_dataset(str(dataset_dir))
    seqs = split_sequences(ds.sequences(), cfg.split)
    requests = history_requests(seqs, cfg.history_len, cfg.max_users)
    spec = engine_spec(cfg, checkpoint_dir, ds.items)
    run = runner(
        requests, generate_batch,
        dict(recall_number=cfg.recall_number, exclude_history=cfg.exclude_history, history_len=cfg.history_len),
        spec, CANDIDATES_SCHEMA, out_path, num_actors=cfg.num_actors, actor_num_cpus=cfg.actor_num_cpus,
        num_gpus=cfg.num_gpus, batch_size=cfg.batch_size, actor_start_timeout_s=cfg.actor_start_timeout_s,
        units_of=users_in, max_error_fraction=cfg.max_error_fraction,
        desc="generate", unit="users",
    )
    seconds = time.perf_counter() - t0
    return {
        "users_in": requests.num_rows,
        "rows_out": run["rows_out"],
        "error_rows": run["error_rows"],
        "errors_by_kind": run["errors_by_kind"],
        "users_per_s": requests.num_rows / max(run["seconds"], 1e-9),
        "seconds": seconds,
        "inference_seconds": run["seconds"],
        "engine": cfg.engine,
        "num_actors": cfg.num_actors,
        "out": str(out_path),
    }
