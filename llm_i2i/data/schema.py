"""The canonical tables every stage reads and writes.

Interactions: one row per (user, item) event. `timestamp` is the event time, or the position in the
user's sequence when the source has order but no clock (S3-Rec files). `source` is "real" or
"synthetic"; `weight` lets fused data down- or up-weight rows. `is_noise` is optional: only the
synthetic default dataset knows which clicks are noise.
"""

from __future__ import annotations

import pyarrow as pa

SOURCE_REAL = "real"
SOURCE_SYNTHETIC = "synthetic"

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


def conform_interactions(table: pa.Table, where: str) -> pa.Table:
    """Cast to the canonical schema (keeping known optional columns); raise naming the bad field."""
    cols = []
    fields = []
    for field in INTERACTIONS_SCHEMA:
        if field.name not in table.column_names:
            raise DataError(f"{where}: missing column {field.name!r} (have {table.column_names})")
        col = table.column(field.name)
        if col.null_count:
            raise DataError(f"{where}: column {field.name!r} has {col.null_count} null value(s)")
        try:
            cols.append(col.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise DataError(f"{where}: column {field.name!r} cannot be read as {field.type}: {e}") from e
        fields.append(field)
    for name, typ in OPTIONAL_INTERACTION_FIELDS.items():
        if name in table.column_names:
            cols.append(table.column(name).cast(typ))
            fields.append(pa.field(name, typ))
    out = pa.Table.from_arrays(cols, schema=pa.schema(fields))
    bad = set(out.column("source").unique().to_pylist()) - {SOURCE_REAL, SOURCE_SYNTHETIC}
    if bad:
        raise DataError(f"{where}: column 'source' has unknown value(s) {sorted(bad)}")
    return out


def empty_items(item_ids) -> pa.Table:
    n = len(item_ids)
    return pa.table(
        {
            "item_id": pa.array(item_ids, pa.int64()),
            "title": pa.array([None] * n, pa.string()),
            "categories": pa.array([None] * n, pa.list_(pa.string())),
            "text": pa.array([None] * n, pa.string()),
        },
        schema=ITEMS_SCHEMA,
    )
