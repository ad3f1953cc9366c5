"""The I2I index on disk: `neighbors.parquet` (item_id, neighbor_id, score, rank) + `manifest.json`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from llm_i2i.i2i.base import Neighbors
from llm_i2i.io import atomic_dir, sha256_file, write_json, write_parquet

INDEX_FORMAT_VERSION = 1


def write_index(neighbors: Neighbors, out_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """Write the index directory atomically; the manifest records counts and the table's checksum."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        table = neighbors.to_table()
        write_parquet(table, tmp / "neighbors.parquet")
        write_json(
            {
                "format_version": INDEX_FORMAT_VERSION,
                "created_unix": time.time(),
                "items": neighbors.n_items,
                "items_with_neighbors": int((neighbors.indptr[1:] > neighbors.indptr[:-1]).sum()),
                "rows": table.num_rows,
                "k": int((neighbors.indptr[1:] - neighbors.indptr[:-1]).max(initial=0)),
                "neighbors_sha256": sha256_file(tmp / "neighbors.parquet"),
                **manifest,
            },
            tmp / "manifest.json",
        )
    return out_dir


def read_neighbors(index_dir: str | Path) -> Neighbors:
    return Neighbors.from_table(pq.read_table(Path(index_dir) / "neighbors.parquet"))
