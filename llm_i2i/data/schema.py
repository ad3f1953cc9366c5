"""The canonical tables every stage reads and writes, and the one place they are built.

Interactions: one row per (user, item) event. `timestamp` is the event time, or the position in the
user's sequence when the source has order but no clock (S3-Rec files). `source` is "real" or
"synthetic"; `weight` lets fused data down- or up-weight rows. `is_noise` is optional: only the
synthetic default dataset knows which clicks are noise. User and item ids are non-negative int64.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa

SOURCE_REAL = "real"
SOURCE_SYNTHETIC = "synthetic"
INT64_MAX = 2**63 - 1

INTERACTIONS_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("timestamp", pa.int64(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("weight", pa.float32(), nullable=False),
    ]
)
OPTIONAL_INTERACTION_FIELDS = {"is_noise": pa.bool_()}

ITEMS_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("categories", pa.list_(pa.string())),
        pa.field("text", pa.string()),
    ]
)


class DataError(ValueError):
    """Bad input data; the message names the file and line or field."""


def interaction_table(user_id, item_id, timestamp, source: str | pa.Array = SOURCE_REAL, is_noise=None) -> pa.Table:
    """THE constructor of interaction tables (readers, synthetic data, sequences and fused data all use it).

    `source` is one value for every row or a string array; `weight` is 1 for every row (the I2I backbones
    fit on unweighted sequences); `is_noise` (bools), when given, becomes the optional column."""
    n = len(user_id)
    table = pa.table(
        {
            "user_id": pa.array(user_id, pa.int64()),
            "item_id": pa.array(item_id, pa.int64()),
            "timestamp": pa.array(timestamp, pa.int64()),
            "source": pa.repeat(source, n).cast(pa.string()) if isinstance(source, str) else source,
            "weight": pa.array(np.ones(n, np.float32)),
        },
        schema=INTERACTIONS_SCHEMA,
    )
    return table if is_noise is None else table.append_column("is_noise", pa.array(is_noise, pa.bool_()))


def items_table(item_ids, titles: Sequence, categories: Sequence, texts: Sequence) -> pa.Table:
    return pa.table(
        {"item_id": pa.array(item_ids, pa.int64()), "title": titles, "categories": categories, "text": texts},
        schema=ITEMS_SCHEMA,
    )


def empty_items(item_ids) -> pa.Table:
    none = [None] * len(item_ids)
    return items_table(item_ids, pa.array(none, pa.string()), pa.array(none, pa.list_(pa.string())), none)


def id_column(col: pa.ChunkedArray | pa.Array, where: str, name: str) -> pa.Array:
    """A column of ids as int64, or a DataError naming the column and the first bad row (1-based).

    Integer columns only (floats, bools and strings are refused, not guessed at); no nulls, no negative
    ids, nothing beyond int64."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if not pa.types.is_integer(col.type):
        raise DataError(f"{where}: column {name!r} has type {col.type}; ids must be integers")
    if col.null_count:
        row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0]) + 1
        raise DataError(f"{where}: column {name!r} row {row}: null id ({col.null_count} null value(s) in all)")
    values = col.to_numpy()
    bad = np.flatnonzero(values > INT64_MAX) if values.dtype == np.uint64 else np.flatnonzero(values < 0)
    if len(bad):
        v = int(values[bad[0]])
        why = "is outside int64" if v > 0 else "is negative"
        raise DataError(f"{where}: column {name!r} row {bad[0] + 1}: {v} {why} (ids are non-negative int64)")
    return pa.array(values.astype(np.int64))


def conform_interactions(table: pa.Table, where: str) -> pa.Table:
    """Cast to the canonical schema (keeping known optional columns); raise naming the bad field."""
    cols = []
    fields = []
    for field in INTERACTIONS_SCHEMA:
        if field.name not in table.column_names:
            raise DataError(f"{where}: missing column {field.name!r} (have {table.column_names})")
        col = table.column(field.name)
        if field.name in ("user_id", "item_id"):
            cols.append(pa.chunked_array([id_column(col, where, field.name)]))
        else:
            cols.append(_cast(col, field.type, where, field.name))
        fields.append(field)
    for name, typ in OPTIONAL_INTERACTION_FIELDS.items():
        if name in table.column_names:
            cols.append(_cast(table.column(name), typ, where, name))
            fields.append(pa.field(name, typ))
    out = pa.Table.from_arrays(cols, schema=pa.schema(fields))
    bad = set(out.column("source").unique().to_pylist()) - {SOURCE_REAL, SOURCE_SYNTHETIC}
    if bad:
        raise DataError(f"{where}: column 'source' has unknown value(s) {sorted(bad)}")
    return out


def _cast(col: pa.ChunkedArray, typ: pa.DataType, where: str, name: str) -> pa.ChunkedArray:
    if col.null_count:
        raise DataError(f"{where}: column {name!r} has {col.null_count} null value(s)")
    try:
        out = col.cast(typ)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise DataError(f"{where}: column {name!r} cannot be read as {typ}: {e}") from None
    if pa.types.is_floating(typ) and not np.isfinite(out.to_numpy()).all():
        raise DataError(f"{where}: column {name!r} has non-finite value(s)")
    return out
