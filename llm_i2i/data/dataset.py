"""`Dataset`: what every reader returns and every stage reads - the canonical tables plus a report of
what the reader accepted, changed or counted (so nothing is dropped silently)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from llm_i2i.data.sequences import Sequences, sequences_from_interactions


@dataclass
class Dataset:
    name: str
    interactions: pa.Table  # INTERACTIONS_SCHEMA
    items: pa.Table  # ITEMS_SCHEMA, sorted by item_id, one row per item id used in interactions
    report: dict[str, Any] = field(default_factory=dict)

    def sequences(self) -> Sequences:
        return sequences_from_interactions(self.interactions, self.items.column("item_id").to_numpy())
