"""Readers from the formats users bring into the canonical tables (see `schema.py`).

Every reader raises `DataError` naming the file and line (or field) of the first bad record, and returns a
report of anything it accepted but changed or left out, so nothing is dropped silently. Files are UTF-8.
Ids are non-negative int64 written with ASCII digits: `-2`, `1e3`, `2.0`, `1_000`, `²` or `١` are refused,
never guessed at (Python's `int()` and `str.isdigit()` take some of them).

Item catalogues (`item_text.jsonl`, RecBole `.item`) are keyed by item id. A record repeated verbatim (a
re-run or concatenated export) is accepted and counted; two different records for one id are refused,
because no rule (first wins, last wins) knows which title is right - that is an upstream join error.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from llm_i2i.data.dataset import Dataset
from llm_i2i.data.schema import (
    INT64_MAX,
    ITEMS_SCHEMA,
    DataError,
    conform_interactions,
    empty_items,
    id_column,
    interaction_table,
    items_table,
)

_SHORT_IDS_LINE = re.compile(r"[0-9]{1,18}(?:[ \t]+[0-9]{1,18})*")  # fast path: ASCII digits, all below 10**18
_NEGATIVE_ID = re.compile(r"-[0-9]+")
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _require(path: Path) -> Path:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    return path


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file, a leading byte-order mark skipped; bad bytes name their line."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror}") from None
    with f:
        for lineno, raw in enumerate(f, 1):
            try:
                yield lineno, raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})") from None


def _parse_id(text: str, where: str, label: str = "") -> int:
    s = text.strip()
    if not (s.isascii() and s.isdigit()):  # isdigit alone takes '²' and '١'
        if _NEGATIVE_ID.fullmatch(s):
            raise DataError(f"{where}: {label}id {_cut(s)!r} is negative (ids are non-negative int64)")
        raise DataError(f"{where}: {label}{_cut(s)!r} is not an integer id (ids are written with ASCII digits 0-9)")
    if len(s.lstrip("0")) > 19 or int(s) > INT64_MAX:  # int() refuses over 4300 digits
        raise DataError(f"{where}: {label}id {_cut(s)!r} is outside int64")
    return int(s)


def _parse_timestamp(text: str, where: str, label: str) -> int:
    """An int64, or a float literal with an integral value (`881250949.0`, `1.6e9`: RecBole writes these)."""
    s = text.strip()
    if _INT.fullmatch(s):
        value = int(s) if len(s.lstrip("+-0")) <= 19 else INT64_MAX + 1  # int() refuses over 4300 digits
    elif _FLOAT.fullmatch(s) and float(s).is_integer():
        value = int(float(s))
    else:
        raise DataError(f"{where}: {label}{_cut(text)!r} is not an integer")
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise DataError(f"{where}: {label}{_cut(s)!r} is outside int64")
    return value


def _cut(text: str) -> str:
    """Bounded text for messages (a 5000-digit id must not flood the terminal)."""
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------- S3-Rec sequence files (+ item_text.jsonl)


def read_s3rec(path: str | Path) -> Dataset:
    """`<Name>/<Name>.txt` (`user item item ...`, time order) and `<Name>/item_text.jsonl` if present."""
    path = Path(path)
    txt = _require(path / f"{path.name}.txt" if path.is_dir() else path)
    users: list[int] = []
    items: list[int] = []
    ts: list[int] = []
    seen_users: dict[int, int] = {}
    for lineno, line in _lines(txt):
        parts = line.split()
        if not parts:
            continue
        if _SHORT_IDS_LINE.fullmatch(line.strip()):
            ids = [int(p) for p in parts]
        else:
            ids = [_parse_id(p, f"{txt}:{lineno}") for p in parts]
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
    item_ids = np.unique(np.asarray(items, np.int64))
    text_file = txt.parent / "item_text.jsonl"
    report: dict[str, Any] = {"source_file": str(txt), "rows": len(users), "users": len(seen_users)}
    if text_file.exists():
        items_table_, text_report = read_item_text(text_file, item_ids)
        report.update(text_report)
    else:
        items_table_ = empty_items(item_ids)
        report["items_without_text"] = len(item_ids)
    return Dataset(txt.stem, interaction_table(users, items, ts), items_table_, report)


def read_item_text(path: Path, item_ids: np.ndarray) -> tuple[pa.Table, dict[str, Any]]:
    """JSON lines with item_id, title, categories; items used in interactions but absent get null text."""
    known = set(item_ids.tolist())
    records: dict[int, tuple[int, dict[str, Any], str | None, list[str]]] = {}
    repeated = categories_as_string = 0
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, int digit limit, nesting depth
            raise DataError(f"{where}: not valid JSON: {getattr(e, 'msg', None) or e}") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object, got {_shown(obj)}")
        if "item_id" not in obj:
            raise DataError(f"{where}: missing field 'item_id'")
        iid = obj["item_id"]
        if type(iid) is not int:  # a bool is an int to isinstance
            raise DataError(f"{where}: field 'item_id' must be an integer, got {_shown(iid)}")
        if iid not in known:
            raise DataError(f"{where}: item_id {iid} does not occur in the interactions")
        if iid in records:
            first_line, first, _, _ = records[iid]
            if obj != first:
                raise DataError(f"{where}: item_id {iid} already given a different record on line {first_line}")
            repeated += 1
            continue
        title = _text_field(obj, "title", where) or _text_field(obj, "idgenrec_text", where)
        cats, as_string = _categories(obj.get("categories"), where)
        categories_as_string += as_string
        records[iid] = (lineno, obj, title, cats)
    rows = [records.get(iid) for iid in item_ids.tolist()]
    table = items_table(
        item_ids,
        [r[2] if r else None for r in rows],
        [r[3] if r else None for r in rows],
        [_item_text(r[2], r[3]) if r else None for r in rows],
    )
    return table, {
        "item_text_file": str(path),
        "items_without_text": len(item_ids) - len(records),
        "item_text_duplicate_records": repeated,
        "categories_given_as_string": categories_as_string,
    }


def _shown(value: Any) -> str:
    """A JSON value as the file spells it, cut short."""
    return _cut(json.dumps(value))


def _checked_text(value: str, where: str, name: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{where}: field {name!r} is not valid Unicode (a lone surrogate escape)") from None
    return value


def _text_field(obj: dict[str, Any], name: str, where: str) -> str | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
        raise DataError(f"{where}: field {name!r} must be a string, got {_shown(value)}")
    return None if value is None else _checked_text(value, where, name)


def _categories(value: Any, where: str) -> tuple[list[str], bool]:
    """Category names or paths (lists of names, joined with ' > '). One string is one category (and says so),
    never a list of its letters."""
    if value is None:
        return [], False
    if isinstance(value, str):
        return [_checked_text(value, where, "categories")], True
    if isinstance(value, list) and all(
        isinstance(c, str) or (isinstance(c, list) and all(isinstance(x, str) for x in c)) for c in value
    ):
        return [_checked_text(c if isinstance(c, str) else " > ".join(c), where, "categories") for c in value], False
    raise DataError(f"{where}: field 'categories' must be a list of category names or paths, got {_shown(value)}")


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
    for o in options:
        found = [c for c in cols if c.lower() == o]
        if len(found) > 1:
            raise DataError(f"{path}: {len(found)} columns could be the {what} column: {found}")
        if found:
            return found[0]
    if required:
        raise DataError(f"{path}: no {what} column (looked for {list(options)}, have {cols})")
    return None


def read_interactions_file(path: str | Path) -> Dataset:
    """A CSV or Parquet file with user, item and (optional) timestamp columns; ids must be integers.
    Without a timestamp column, the row order is the time order."""
    path = _require(Path(path))
    if path.suffix.lower() in (".parquet", ".pq"):
        users, items, times = _read_parquet_interactions(path)
    else:
        users, items, times = _read_delimited_interactions(path, "\t" if path.suffix == ".inter" else None)
    if len(users) == 0:
        raise DataError(f"{path}: no interactions")
    return Dataset(path.stem, interaction_table(users, items, times), empty_items(np.unique(items)),
                   {"source_file": str(path), "rows": len(users)})


def _read_delimited_interactions(path: Path, delimiter: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSV/TSV; the delimiter (`,`, tab or `;`) is sniffed unless given (RecBole files are tab-separated)."""
    lines = (text for _, text in _lines(path))
    head = list(itertools.islice(lines, 20))
    if delimiter is not None:
        dialect: dict[str, Any] = {"delimiter": delimiter, "quoting": csv.QUOTE_NONE}
    else:
        try:
            dialect = {"dialect": csv.Sniffer().sniff("".join(head)[:4096], delimiters=",\t;")}
        except csv.Error:  # one column, or nothing that tells the delimiters apart: commas
            dialect = {"dialect": csv.excel}
    rows = _delimited_rows(path, itertools.chain(head, lines), dialect)
    _, header = next(rows)
    u = _pick(header, _USER_COLS, "user", path)
    i = _pick(header, _ITEM_COLS, "item", path)
    t = _pick(header, _TIME_COLS, "timestamp", path, required=False)
    ui, ii, ti = header.index(u), header.index(i), (header.index(t) if t else None)
    users: list[int] = []
    items: list[int] = []
    times: list[int] = []
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        users.append(_parse_id(row[ui], where, f"field {u!r}: "))
        items.append(_parse_id(row[ii], where, f"field {i!r}: "))
        times.append(_parse_timestamp(row[ti], where, f"field {t!r}: ") if ti is not None else lineno)
    return np.asarray(users, np.int64), np.asarray(items, np.int64), np.asarray(times, np.int64)


def _delimited_rows(path: Path, lines: Iterator[str], dialect: dict[str, Any]) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields): first the header (names without a RecBole `:type`), then every non-blank row,
    each as wide as the header. A csv error (a field over 128 KB, say) names its line."""
    reader = csv.reader(lines, **dialect)
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty file (expected a header line)")
        header = [h.split(":")[0].strip() for h in header]
        yield 1, header
        for row in reader:
            if not "".join(row).strip():
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{reader.line_num}: expected {len(header)} fields, got {len(row)}")
            yield reader.line_num, row
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: {e}") from None


def _read_parquet(path: Path) -> pa.Table:
    try:
        table = pq.read_table(path)
        table.validate(full=True)  # e.g. string columns holding bytes that are not UTF-8
    except (pa.ArrowException, OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable Parquet file: {e}") from None
    return table


def _read_parquet_interactions(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = _read_parquet(path)
    cols = table.column_names
    u, i = _pick(cols, _USER_COLS, "user", path), _pick(cols, _ITEM_COLS, "item", path)
    t = _pick(cols, _TIME_COLS, "timestamp", path, required=False)
    users = id_column(table.column(u), str(path), u).to_numpy()
    items = id_column(table.column(i), str(path), i).to_numpy()
    times = _timestamp_column(table.column(t), path, t) if t else np.arange(len(users), dtype=np.int64)
    return users, items, times


def _timestamp_column(col: pa.ChunkedArray, path: Path, name: str) -> np.ndarray:
    """Integer or timestamp columns as int64; floats only where every value is integral."""
    col = col.combine_chunks()
    if col.null_count:
        raise DataError(f"{path}: column {name!r} has {col.null_count} null value(s)")
    if pa.types.is_timestamp(col.type) or pa.types.is_duration(col.type):
        return col.cast(pa.int64()).to_numpy()
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        values = col.to_numpy()
        if values.dtype.kind == "f":
            bad = ~np.isfinite(values) | (np.floor(values) != values) | (np.abs(values) >= 2.0**63)
        else:
            bad = values > INT64_MAX if values.dtype == np.uint64 else np.zeros(len(values), bool)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: column {name!r} row {row + 1}: {values[row]} is not an int64 timestamp")
        return values.astype(np.int64)
    raise DataError(f"{path}: column {name!r} has type {col.type}; timestamps must be integers or timestamps")


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
    """Rows for items no interaction uses are left out and counted."""
    rows: dict[int, tuple[int, str, list[str]]] = {}
    repeated = 0
    lines = _delimited_rows(path, (text for _, text in _lines(path)), {"delimiter": "\t", "quoting": csv.QUOTE_NONE})
    _, header = next(lines)
    if "item_id" not in header:
        raise DataError(f"{path}:1: no item_id column (have {header})")
    id_col = header.index("item_id")
    title_col = next((header.index(c) for c in ("movie_title", "title", "name") if c in header), None)
    cat_col = next((header.index(c) for c in ("class", "genre", "categories") if c in header), None)
    for lineno, row in lines:
        where = f"{path}:{lineno}"
        iid = _parse_id(row[id_col], where, "field 'item_id': ")
        record = (lineno, row[title_col] if title_col is not None else "", row[cat_col].split() if cat_col is not None else [])
        if iid in rows:
            if rows[iid][1:] != record[1:]:
                raise DataError(f"{where}: item_id {iid} already given a different record on line {rows[iid][0]}")
            repeated += 1
        else:
            rows[iid] = record
    found = [rows.get(i) for i in item_ids.tolist()]
    table = items_table(
        item_ids,
        [r[1] if r else None for r in found],
        [r[2] if r else None for r in found],
        [_item_text(r[1], [" ".join(r[2])] if r[2] else None) if r else None for r in found],
    )
    return table, {
        "item_text_file": str(path),
        "items_without_text": sum(r is None for r in found),
        "item_text_duplicate_records": repeated,
        "item_rows_without_interactions": len(rows.keys() - set(item_ids.tolist())),
    }


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
    """A directory written by `save_dataset`; checked like any other input, since it may be edited by hand."""
    p = Path(path)
    inter_path = _require(p / "interactions.parquet")
    inter = conform_interactions(_read_parquet(inter_path), str(inter_path))
    if inter.num_rows == 0:
        raise DataError(f"{inter_path}: no interactions")
    used = np.unique(inter.column("item_id").to_numpy())
    items_path = p / "items.parquet"
    items = _read_canonical_items(items_path, used) if items_path.exists() else empty_items(used)
    report = _read_report(p / "report.json")
    name = report.get("name", p.name)
    if not isinstance(name, str):
        raise DataError(f"{p / 'report.json'}: field 'name' must be a string, got {_shown(name)}")
    return Dataset(name, inter, items, report)


def _read_canonical_items(path: Path, used: np.ndarray) -> pa.Table:
    table = _read_parquet(path)
    if sorted(table.column_names) != sorted(ITEMS_SCHEMA.names):
        raise DataError(f"{path}: columns {table.column_names}, expected {ITEMS_SCHEMA.names}")
    ids = id_column(table.column("item_id"), str(path), "item_id")
    try:
        table = table.select(ITEMS_SCHEMA.names).set_column(0, "item_id", ids).cast(ITEMS_SCHEMA)
    except (pa.ArrowException, ValueError) as e:
        raise DataError(f"{path}: cannot be read as {ITEMS_SCHEMA}: {e}") from None
    values = ids.to_numpy()
    order = np.argsort(values, kind="stable")
    repeated = values[order][1:][np.diff(values[order]) == 0]
    if len(repeated):
        raise DataError(f"{path}: item_id {int(repeated[0])} has more than one row")
    missing = np.setdiff1d(used, values)
    if len(missing):
        raise DataError(f"{path}: item_id(s) {missing[:5].tolist()} used in the interactions have no row")
    return table.take(pa.array(order))


def _read_report(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        report = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise DataError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(report, dict):
        raise DataError(f"{path}: expected a JSON object, got {_shown(report)}")
    return report


def save_dataset(ds: Dataset, path: str | Path) -> Path:
    from llm_i2i.io import atomic_dir, write_json, write_parquet

    with atomic_dir(path) as tmp:
        write_parquet(ds.interactions, tmp / "interactions.parquet")
        write_parquet(ds.items, tmp / "items.parquet")
        write_json({"name": ds.name, **ds.report}, tmp / "report.json")
    return Path(path)
