"""Score (user, item) pairs with the discriminator: confidence = P(Yes) normalised over Yes/No.

Synthetic pairs are judged against the history the generator saw (the user's `history_len` most recent
items of `split`). A pair with a `position` column (not null) is a REAL interaction at that index of the
user's full sequence: its history is the items before it (what the "drop noisy real interactions"
variant needs; `real_interaction_pairs` builds such a table). Unknown users/items, empty histories and
null fields become rows with `error` set and a null confidence; they are counted, never fatal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from llm_i2i.llm.generate import (DEFAULT_MAX_ERROR_FRACTION, HISTORY, SPLITS, GenerateConfig,
                                  call_per_row_on_failure, check_error_fraction, check_history, engine_spec,
                                  split_sequences)
from llm_i2i.llm.engine import ENGINES, InferenceEngine
from llm_i2i.llm.runners import BatchRunner

POSITION = "position"  # optional input column: index of a real interaction in the user's full sequence
REQUIRED = ("user_id", "item_id")


@dataclass
class DiscriminateConfig:
    engine: str = "hf"  # 'hf' | 'vllm'
    batch_size: int = 128  # pairs per engine call
    num_actors: int = 1  # Ray Data actors; 0 = in this process without Ray
    actor_num_cpus: float = 0.5  # fractional: Ray Data needs < 1 on a 2-core box
    actor_start_timeout_s: int = 600  # wait this long for all num_actors actors before streaming; 0 = start on the first
    num_gpus: float | None = None  # GPUs per actor; None = 1 if the Ray cluster declares GPUs, else 0
    torch_threads: int = 0  # intra-op threads per actor; 0 = torch default
    engine_options: dict[str, Any] = field(default_factory=dict)  # passed to the engine's constructor
    history_len: int = 10  # most recent items shown in the prompt
    split: str = "train"  # history for pairs without a position: 'train' | 'train_valid' | 'full'
    max_error_fraction: float = DEFAULT_MAX_ERROR_FRACTION  # pairs that could not be scored, at most
    EXECUTION_ONLY = GenerateConfig.EXECUTION_ONLY  # not part of the stage's cache key (`config.result_config`)

    def validate(self) -> None:
        check_error_fraction(self.max_error_fraction)
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if (self.history_len < 1 or self.batch_size < 1 or self.num_actors < 0 or self.actor_num_cpus <= 0
                or self.actor_start_timeout_s < 0):
            raise ValueError("history_len >= 1, batch_size >= 1, num_actors >= 0, actor_num_cpus > 0, "
                             "actor_start_timeout_s >= 0 are required")
        if self.num_gpus is not None and self.num_gpus < 0:
            raise ValueError(f"num_gpus must be >= 0 (or unset: from the cluster), got {self.num_gpus}")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")


def real_interaction_pairs(seqs) -> pa.Table:
    """Every real interaction as (user_id, item_id, position) for scoring noisy real clicks."""
    lens = seqs.lengths
    pos = np.arange(len(seqs.items)) - np.repeat(seqs.indptr[:-1], lens)
    return pa.table({"user_id": pa.array(np.repeat(seqs.user_ids, lens), pa.int64()),
                     "item_id": pa.array(seqs.item_ids[seqs.items], pa.int64()),
                     POSITION: pa.array(pos, pa.int64())})


def attach_histories(pairs: pa.Table, full, split_seqs, history_len: int) -> pa.Table:
    """Add the HISTORY column (external ids, oldest first; null when the user is unknown)."""
    missing = [c for c in REQUIRED if c not in pairs.column_names]
    if missing:
        raise ValueError(f"pairs: missing column(s) {missing} (have {pairs.column_names})")
    if HISTORY in pairs.column_names:
        raise ValueError(f"pairs: column name {HISTORY!r} is reserved")
    users = pairs.column("user_id").to_numpy(zero_copy_only=False)
    users = np.where(np.isnan(users), -1, users).astype(np.int64) if users.dtype.kind == "f" else users.astype(np.int64)
    row_of = dict(zip(full.user_ids.tolist(), range(full.n_users)))
    positions = pairs.column(POSITION).to_pylist() if POSITION in pairs.column_names else [None] * pairs.num_rows
    histories = []
    for u, p in zip(users.tolist(), positions):
        r = row_of.get(u)
        if r is None:
            histories.append(None)
        elif p is None:
            histories.append(split_seqs.item_ids[split_seqs.user(r)[-history_len:]].tolist())
        else:
            seq = full.user(r)
            histories.append(full.item_ids[seq[max(0, min(p, len(seq)) - history_len):max(0, min(p, len(seq)))]].tolist())
    return pairs.append_column(HISTORY, pa.array(histories, pa.list_(pa.int64())))


def output_schema(pairs_schema: pa.Schema) -> pa.Schema:
    fields = [f for f in pairs_schema if f.name not in (HISTORY, "confidence", "error")]
    return pa.schema(fields + [pa.field("confidence", pa.float32()), pa.field("error", pa.string())])


def discriminate_batch(engine: InferenceEngine, batch: pa.Table, history_len: int) -> pa.Table:
    """P(Yes) for every (user, item, history) row; all input columns but HISTORY are kept."""
    users = batch.column("user_id").to_pylist()
    items = batch.column("item_id").to_pylist()
    histories = batch.column(HISTORY).to_pylist()
    errors, good, clean, cands = {}, [], [], []
    for r, (u, i, h) in enumerate(zip(users, items, histories)):
        if u is None or i is None:
            errors[r] = f"malformed row: null {'user_id' if u is None else 'item_id'}"
            continue
        if h is None:
            errors[r] = f"unknown user_id {u}"
            continue
        if not engine.known_items(np.array([i]))[0]:
            errors[r] = f"unknown item id {i} (not in the checkpoint's item vocabulary)"
            continue
        h, err = check_history(h, engine, history_len)
        if err:
            errors[r] = err
            continue
        good.append(r), clean.append(h), cands.append(i)
    results, failed = call_per_row_on_failure(
        lambda hs, cs: engine.yes_probability(hs, np.asarray(cs, np.int64)).tolist(), good, clean, cands)
    errors.update(failed)
    conf = [None if r in errors else results[r] for r in range(batch.num_rows)]
    err = [errors.get(r) for r in range(batch.num_rows)]
    out = batch.drop_columns([c for c in (HISTORY, "confidence", "error") if c in batch.column_names])
    out = out.append_column("confidence", pa.array(conf, pa.float32()))
    return out.append_column("error", pa.array(err, pa.string()))


def run_discriminate(cfg: DiscriminateConfig, checkpoint_dir: str | Path, dataset_dir: str | Path,
                     pairs_path: str | Path, out_path: str | Path, runner: BatchRunner) -> dict[str, Any]:
    """Score every pair of the Parquet file `pairs_path`; write it back with `confidence` and `error`."""
    from llm_i2i.data import load_dataset

    cfg.validate()
    t0 = time.perf_counter()
    ds = load_dataset(str(dataset_dir))
    full = ds.sequences()
    pairs = pq.read_table(pairs_path)
    try:
        requests = attach_histories(pairs, full, split_sequences(full, cfg.split), cfg.history_len)
    except ValueError as e:
        raise ValueError(f"{pairs_path}: {e}") from e
    spec = engine_spec(cfg, checkpoint_dir, ds.items)
    run = runner(requests, discriminate_batch, dict(history_len=cfg.history_len), spec,
                 output_schema(requests.schema), out_path, num_actors=cfg.num_actors,
                 actor_num_cpus=cfg.actor_num_cpus, num_gpus=cfg.num_gpus, batch_size=cfg.batch_size,
                 actor_start_timeout_s=cfg.actor_start_timeout_s,
                 max_error_fraction=cfg.max_error_fraction, desc="discriminate", unit="pairs")
    return {
        "pairs_in": pairs.num_rows,
        "rows_out": run["rows_out"],
        "error_rows": run["error_rows"],
        "errors_by_kind": run["errors_by_kind"],
        "pairs_per_s": pairs.num_rows / max(run["seconds"], 1e-9),
        "seconds": time.perf_counter() - t0,
        "inference_seconds": run["seconds"],
        "engine": cfg.engine,
        "num_actors": cfg.num_actors,
        "out": str(out_path),
    }
