"""Readers from the formats users bring into the canonical tables (see `schema.py`).

Every reader raises `DataError` naming the file and line (or field) of the first bad record, and
returns a report of anything it filtered, so nothing is dropped silently.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from llm_i2i.data.schema import (
    INTERACTIONS_SCHEMA,
    ITEMS_SCHEMA,
    SOURCE_REAL,
    DataError,
    conform_interactions,
    empty_items,
)


@dataclass
class Dataset:
    name: str
    interactions: pa.Table  # INTERACTIONS_SCHEMA
    items: pa.Table  # ITEMS_SCHEMA, one row per item id used in interactions
    report: dict[str, Any] = field(default_factory=dict)

    def sequences(self):
        from llm_i2i.data.sequences import sequences_from_interactions

        return sequences_from_interactions(self.interactions, self.items.column("item_id").to_numpy())


def _require(path: Path) -> Path:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    return path


def _interactions(users: list[int], items: list[int], ts: list[int]) -> pa.Table:
    n = len(users)
    return pa.table(
        {
            "user_id": pa.array(users, pa.int64()),
            "item_id": pa.array(items, pa.int64()),
            "timestamp": pa.array(ts, pa.int64()),
            "source": pa.array([SOURCE_REAL] * n, pa.string()),
            "weight": pa.array(np.ones(n, np.float32)),
        },
        schema=INTERACTIONS_SCHEMA,
    )


# ---------------------------------------------------------------- S3-Rec sequence files (+ item_text.jsonl)


def read_s3rec(path: str | Path) -> Dataset:
    """`<Name>/<Name>.txt` (`user item item ...`, time order) and `<Name>/item_text.jsonl` if present."""
    path = Path(path)
    txt = _require(path / f"{path.name}.txt" if path.is_dir() else path)
    users: list[int] = []
    items: list[int] = []
    ts: list[int] = []
    seen_users: dict[int, int] = {}
    with open(txt) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                ids = [int(p) for p in parts]
            except ValueError:
                bad = next(p for p in parts if not p.lstrip("-").isdigit())
                raise DataError(f"{txt}:{lineno}: unparsable id {bad!r} (expected integers)") from None
            if len(ids) < 2:
                raise DataError(f"{txt}:{lineno}: user {ids[0]} has no items")
            if ids[0] in seen_users:
                raise DataError(f"{txt}:{lineno}: user {ids[0]} already listed on line {seen_users[ids[0]]}")
            seen_users[ids[0]] = lineno
            n = len(ids) - 1
            users.extend([ids[0]] * n)
            items.extend(ids[1:])
            ts.extend(range(n))
    if not users:
        raise DataError(f"{txt}: no interactions")
    inter = _interactions(users, items, ts)
    item_ids = np.unique(np.asarray(items, np.int64))
    text_file = txt.parent / "item_text.jsonl"
    report: dict[str, Any] = {"source_file": str(txt), "rows": len(users), "users": len(seen_users)}
    if text_file.exists():
        items_table, text_report = read_item_text(text_file, item_ids)
        report.update(text_report)
    else:
        items_table = empty_items(item_ids)
        report["items_without_text"] = len(item_ids)
    return Dataset(txt.stem, inter, items_table, report)


def read_item_text(path: Path, item_ids: np.ndarray) -> tuple[pa.Table, dict[str, Any]]:
    """JSON lines with item_id, title, categories; items used in interactions but absent get null text."""
    known = set(item_ids.tolist())
    rows: dict[int, dict[str, Any]] = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON: {e.msg}") from None
            if "item_id" not in obj:
                raise DataError(f"{path}:{lineno}: missing field 'item_id'")
            iid = obj["item_id"]
            if not isinstance(iid, int):
                raise DataError(f"{path}:{lineno}: field 'item_id' must be an integer, got {iid!r}")
            if iid not in known:
                raise DataError(f"{path}:{lineno}: item_id {iid} does not occur in the interactions")
            cats = [" > ".join(c) if isinstance(c, list) else str(c) for c in obj.get("categories") or []]
            title = obj.get("title") or obj.get("idgenrec_text")
            rows[iid] = {"title": title, "categories": cats}
    titles, categories, texts = [], [], []
    for iid in item_ids.tolist():
        r = rows.get(iid)
        titles.append(r["title"] if r else None)
        categories.append(r["categories"] if r else None)
        texts.append(_item_text(r["title"], r["categories"]) if r else None)
    table = pa.table(
        {"item_id": pa.array(item_ids, pa.int64()), "title": titles, "categories": categories, "text": texts},
        schema=ITEMS_SCHEMA,
    )
    return table, {"item_text_file": str(path), "items_without_text": len(item_ids) - len(rows)}


def _item_text(title: str | None, categories: list[str] | None) -> str:
    parts = [title or ""]
    if categories:
        parts.append(categories[0])
    return " | ".join(p for p in parts if p)


# ---------------------------------------------------------------- CSV / Parquet interactions

_USER_COLS = ("user_id", "user", "userid", "uid")
_ITEM_COLS = ("item_id", "item", "itemid", "iid")
_TIME_COLS = ("timestamp", "ts", "time", "order")


def _pick(cols: list[str], options: tuple[str, ...], what: str, path: Path, required: bool = True) -> str | None:
    lower = {c.lower(): c for c in cols}
    for o in options:
        if o in lower:
            return lower[o]
    if required:
        raise DataError(f"{path}: no {what} column (looked for {list(options)}, have {cols})")
    return None


def read_interactions_file(path: str | Path) -> Dataset:
    """A CSV or Parquet file with user, item and (optional) timestamp columns; ids must be integers."""
    path = _require(Path(path))
    if path.suffix.lower() in (".parquet", ".pq"):
        table = pq.read_table(path)
        cols = table.column_names
        u, i, t = _pick(cols, _USER_COLS, "user", path), _pick(cols, _ITEM_COLS, "item", path), _pick(
            cols, _TIME_COLS, "timestamp", path, required=False
        )
        users, items = _int_column(table.column(u), path, u), _int_column(table.column(i), path, i)
        times = _int_column(table.column(t), path, t) if t else np.arange(len(users), dtype=np.int64)
    else:
        users_l: list[int] = []
        items_l: list[int] = []
        times_l: list[int] = []
        with open(path, newline="") as f:
            sample = f.read(4096)
            f.seek(0)
            dialect = csv.Sniffer().sniff(sample, delimiters=",\t;") if sample else csv.excel
            reader = csv.reader(f, dialect)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: empty file")
            header = [h.split(":")[0].strip() for h in header]
            u, i, t = (
                _pick(header, _USER_COLS, "user", path),
                _pick(header, _ITEM_COLS, "item", path),
                _pick(header, _TIME_COLS, "timestamp", path, required=False),
            )
            ui, ii = header.index(u), header.index(i)
            ti = header.index(t) if t else None
            for lineno, row in enumerate(reader, 2):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise DataError(f"{path}:{lineno}: expected {len(header)} fields, got {len(row)}")
                users_l.append(_parse_int(row[ui], path, lineno, u))
                items_l.append(_parse_int(row[ii], path, lineno, i))
                times_l.append(_parse_int(row[ti], path, lineno, t) if ti is not None else lineno)
        users, items, times = np.asarray(users_l, np.int64), np.asarray(items_l, np.int64), np.asarray(times_l, np.int64)
    if len(users) == 0:
        raise DataError(f"{path}: no interactions")
    inter = _interactions(users.tolist(), items.tolist(), times.tolist())
    item_ids = np.unique(items)
    return Dataset(path.stem, inter, empty_items(item_ids), {"source_file": str(path), "rows": len(users)})


def _parse_int(text: str, path: Path, lineno: int, col: str | None) -> int:
    s = text.strip()
    try:
        return int(s)
    except ValueError:
        try:
            f = float(s)
        except ValueError:
            raise DataError(f"{path}:{lineno}: field {col!r}: {text!r} is not an integer") from None
        if not f.is_integer():
            raise DataError(f"{path}:{lineno}: field {col!r}: {text!r} is not an integer") from None
        return int(f)


def _int_column(col: pa.ChunkedArray, path: Path, name: str) -> np.ndarray:
    if col.null_count:
        raise DataError(f"{path}: column {name!r} has {col.null_count} null value(s)")
    try:
        return col.cast(pa.int64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise DataError(f"{path}: column {name!r} is not integer: {e}") from None


# ---------------------------------------------------------------- RecBole atomic files


def read_recbole(path: str | Path) -> Dataset:
    """`<dir>/<name>.inter` (+ `<name>.item` for titles): tab-separated with typed headers `name:type`."""
    path = Path(path)
    inter_file = _require(path / f"{path.name}.inter" if path.is_dir() else path)
    base = read_interactions_file(inter_file)
    item_file = inter_file.with_suffix(".item")
    items = base.items
    report = dict(base.report)
    if item_file.exists():
        items, extra = _read_recbole_items(item_file, items.column("item_id").to_numpy())
        report.update(extra)
    else:
        report["items_without_text"] = items.num_rows
    return Dataset(inter_file.stem, base.interactions, items, report)


def _read_recbole_items(path: Path, item_ids: np.ndarray) -> tuple[pa.Table, dict[str, Any]]:
    rows: dict[int, tuple[str, list[str]]] = {}
    with open(path, newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.split(":")[0] for h in next(reader)]
        if "item_id" not in header:
            raise DataError(f"{path}:1: no item_id column (have {header})")
        id_col = header.index("item_id")
        title_col = next((header.index(c) for c in ("movie_title", "title", "name") if c in header), None)
        cat_col = next((header.index(c) for c in ("class", "genre", "categories") if c in header), None)
        for lineno, row in enumerate(reader, 2):
            if not row:
                continue
            iid = _parse_int(row[id_col], path, lineno, "item_id")
            title = row[title_col] if title_col is not None and title_col < len(row) else ""
            cats = row[cat_col].split() if cat_col is not None and cat_col < len(row) else []
            rows[iid] = (title, cats)
    titles = [rows.get(i, (None, None))[0] for i in item_ids.tolist()]
    cats = [rows.get(i, (None, None))[1] for i in item_ids.tolist()]
    texts = [_item_text(t, [" ".join(c)] if c else None) if t is not None else None for t, c in zip(titles, cats)]
    table = pa.table(
        {"item_id": pa.array(item_ids, pa.int64()), "title": titles, "categories": cats, "text": texts},
        schema=ITEMS_SCHEMA,
    )
    return table, {"item_text_file": str(path), "items_without_text": sum(t is None for t in titles)}


# ---------------------------------------------------------------- dispatch


def load_dataset(path: str | Path | None, **synthetic_overrides: Any) -> Dataset:
    """Detect the format: None/'default' -> the embedded synthetic dataset; a directory of S3-Rec or
    RecBole files; a `.txt` sequence file; a CSV/Parquet interaction file; or a canonical dataset
    directory written by `save_dataset` (interactions.parquet + items.parquet)."""
    if path is None or str(path) in ("default", "synthetic"):
        from llm_i2i.data.synthetic import SyntheticConfig, generate

        return generate(SyntheticConfig(**synthetic_overrides))
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if p.is_dir():
        if (p / "interactions.parquet").exists():
            return read_canonical(p)
        if (p / f"{p.name}.inter").exists():
            return read_recbole(p)
        if (p / f"{p.name}.txt").exists():
            return read_s3rec(p)
        raise DataError(f"{p}: directory holds no known dataset (<name>.txt, <name>.inter or interactions.parquet)")
    if p.suffix == ".inter":
        return read_recbole(p)
    if p.suffix == ".txt":
        return read_s3rec(p)
    return read_interactions_file(p)


def read_canonical(path: str | Path) -> Dataset:
    p = Path(path)
    inter = conform_interactions(pq.read_table(_require(p / "interactions.parquet")), str(p / "interactions.parquet"))
    items_path = p / "items.parquet"
    items = pq.read_table(items_path).cast(ITEMS_SCHEMA) if items_path.exists() else empty_items(
        np.unique(inter.column("item_id").to_numpy())
    )
    report_path = p / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return Dataset(report.get("name", p.name), inter, items, report)


def save_dataset(ds: Dataset, path: str | Path) -> Path:
    from llm_i2i.io import atomic_dir, write_json, write_parquet

    with atomic_dir(path) as tmp:
        write_parquet(ds.interactions, tmp / "interactions.parquet")
        write_parquet(ds.items, tmp / "items.parquet")
        write_json({"name": ds.name, **ds.report}, tmp / "report.json")
    return Path(path)
