"""Property: whatever bytes a user hands a reader, it returns a valid Dataset or raises a DataError that
names the file - never another exception. One test per format; bounded examples, no deadline (CI-fast)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from llm_i2i.data import DataError, Dataset, load_dataset
from llm_i2i.data.schema import INTERACTIONS_SCHEMA, ITEMS_SCHEMA, OPTIONAL_INTERACTION_FIELDS

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# the tokens readers get wrong: int64 edges, signs, exponents, floats, non-ASCII digits, separators, NUL
EDGE_TOKENS = st.sampled_from(["0", "007", "9223372036854775807", "9223372036854775808", "99999999999999999999", "-1",
                               "+3", "1e3", "2.0", "1_0", "\u00b2", "\u0661", "nan", "x", "", "\x00", '"', "'", "1,2",
                               "\t", "\u00a0", "1.6e9"])
IDS = st.integers(0, 5).map(str)
TOKENS = st.one_of(IDS, EDGE_TOKENS, st.text(max_size=4))


def _lines(sep: str = " ", width: st.SearchStrategy[int] = st.integers(0, 5), min_lines: int = 0) -> st.SearchStrategy[str]:
    """Lines of `width` tokens (drawn once): ids only, or any token an edge case or any text (two modes,
    so that both valid datasets and every kind of refusal are reached)."""

    def lines(tokens):
        return width.flatmap(lambda n: st.lists(st.lists(tokens, min_size=n, max_size=n).map(sep.join), min_size=min_lines, max_size=8))

    return st.one_of(lines(IDS), lines(TOKENS)).map("\n".join)


def _file_bytes(text: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """Mostly plausible text, sometimes raw bytes, sometimes text with a bad byte spliced in."""
    return st.one_of(
        text.map(str.encode),
        text.map(str.encode),
        st.binary(max_size=200),
        st.tuples(text, st.binary(min_size=1, max_size=3), text).map(lambda t: t[0].encode() + t[1] + t[2].encode()),
    )


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 12), st.integers(), st.floats(), st.text(max_size=6))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=6)
GOOD_RECORDS = st.fixed_dictionaries(
    {"item_id": st.integers(0, 5)},
    optional={
        "title": st.text(max_size=8),
        "categories": st.text(max_size=5) | st.lists(st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=3), max_size=3),
    },
)
ANY_RECORDS = st.fixed_dictionaries(
    {},
    optional={"item_id": st.integers(-1, 12) | JSON_VALUES, "title": JSON_VALUES, "idgenrec_text": JSON_VALUES,
              "categories": JSON_VALUES},
)
JSONL = st.one_of(
    st.lists(GOOD_RECORDS.map(json.dumps), max_size=6),
    st.lists(st.one_of(GOOD_RECORDS, ANY_RECORDS, JSON_VALUES).map(json.dumps) | st.text(max_size=10), max_size=6),
).map("\n".join)


def _assert_valid(ds: Dataset) -> None:
    """What every stage may assume of a Dataset, checked independently of the readers."""
    assert isinstance(ds, Dataset) and isinstance(ds.name, str)
    inter = ds.interactions
    assert inter.num_rows > 0
    assert inter.schema.names[:5] == INTERACTIONS_SCHEMA.names
    for field in INTERACTIONS_SCHEMA:
        assert inter.schema.field(field.name).type == field.type and inter.column(field.name).null_count == 0
    assert set(inter.schema.names[5:]) <= set(OPTIONAL_INTERACTION_FIELDS)
    assert inter.column("user_id").to_numpy().min() >= 0 and inter.column("item_id").to_numpy().min() >= 0
    assert set(inter.column("source").to_pylist()) <= {"real", "synthetic"}
    assert ds.items.schema == ITEMS_SCHEMA
    ids = ds.items.column("item_id").to_numpy()
    assert np.all(np.diff(ids) > 0)
    assert np.isin(inter.column("item_id").to_numpy(), ids).all()
    assert ds.sequences().indptr[-1] == inter.num_rows
    json.dumps(ds.report)
    ds.items.to_pylist()  # every title and category decodes


def _load_or_data_error(write: Callable[[Path], Path]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = write(root)
        try:
            ds = load_dataset(path)
        except DataError as e:
            assert str(root) in str(e), f"DataError does not name the file: {e}"
            event("DataError")
            return
        _assert_valid(ds)
        event("valid Dataset")


def _write(files: dict[str, bytes]) -> Callable[[Path], Path]:
    """Writes `files` into <root>/Toy or <root>/mini (dataset directories are named like their files)."""

    def write(root: Path) -> Path:
        d = root / next(iter(files)).split(".")[0]
        d.mkdir()
        for name, data in files.items():
            if data is not None:
                (d / name).write_bytes(data)
        return d

    return write


@FUZZ
@given(txt=_file_bytes(_lines(width=st.integers(1, 5))), text=st.none() | _file_bytes(JSONL))
def test_s3rec_and_item_text(txt, text):
    _load_or_data_error(_write({"Toy.txt": txt, "item_text.jsonl": text}))


INTER_HEADERS = ["user_id:token", "item_id:token", "timestamp:float"]


def _width(header: list[str]) -> st.SearchStrategy[int]:
    """Rows as wide as the header, mostly."""
    return st.sampled_from([len(header)] * 3 + [max(len(header) - 1, 0), len(header) + 1])


@FUZZ
@given(
    header=st.one_of([st.permutations(INTER_HEADERS)] * 3 + [st.permutations(INTER_HEADERS[:2]),
                     st.lists(st.sampled_from(INTER_HEADERS + ["rating:float", "user_id", "x:token"]), max_size=4)]),
    rows=st.data(),
    item=st.none() | _file_bytes(
        st.tuples(st.sampled_from(["item_id:token\tmovie_title:token_seq\tclass:token_seq", "item_id:token", "title", ""]),
                  st.one_of(_lines("\t"), st.lists(st.tuples(IDS, st.text(max_size=6), st.text(max_size=6)).map("\t".join),
                                                     max_size=6).map("\n".join))).map("\n".join)),
    junk=st.none() | st.binary(max_size=100),
)
def test_recbole_atomic_files(header, rows, item, junk):
    body = rows.draw(_lines("\t", _width(header), min_lines=1))
    inter = junk if junk is not None else ("\t".join(header) + "\n" + body).encode()
    _load_or_data_error(_write({"mini.inter": inter, "mini.item": item}))


@FUZZ
@given(
    header=st.permutations(["user", "item", "timestamp"]) | st.permutations(["user_id", "item_id"])
    | st.lists(st.sampled_from(["user", "item", "timestamp", "user_id", "item_id", "ts", "User", "x", "item:token"]), max_size=4),
    sep=st.sampled_from([",", "\t", ";", "|"]),
    rows=st.data(),
    junk=st.none() | st.binary(max_size=200),
)
def test_csv(header, sep, rows, junk):
    body = rows.draw(_lines(sep, _width(header)))
    data = junk if junk is not None else (sep.join(header) + "\n" + body).encode()

    def write(root: Path) -> Path:
        (root / "clicks.csv").write_bytes(data)
        return root / "clicks.csv"

    _load_or_data_error(write)


def _any_column(n: int) -> st.SearchStrategy[pa.Array]:
    """Arrow columns of every kind a Parquet file can hold where ids are expected."""
    ints = st.integers(-(2**63), 2**63 - 1)
    return st.one_of(
        st.lists(st.integers(0, 9) | ints, min_size=n, max_size=n).map(lambda v: pa.array(v, pa.int64())),
        st.lists(st.integers(0, 2**64 - 1), min_size=n, max_size=n).map(lambda v: pa.array(v, pa.uint64())),
        st.lists(st.integers(-128, 127), min_size=n, max_size=n).map(lambda v: pa.array(v, pa.int8())),
        st.lists(st.floats() | st.integers(0, 9).map(float), min_size=n, max_size=n).map(pa.array),
        st.lists(st.none() | st.integers(0, 9), min_size=n, max_size=n).map(lambda v: pa.array(v, pa.int64())),
        st.lists(st.booleans(), min_size=n, max_size=n).map(pa.array),
        st.lists(st.text(max_size=3), min_size=n, max_size=n).map(pa.array),
        st.lists(st.sampled_from(["real", "synthetic", "fake"]), min_size=n, max_size=n).map(pa.array),
        st.lists(st.integers(0, 2**40), min_size=n, max_size=n).map(lambda v: pa.array(v, pa.timestamp("s"))),
    )


def _plausible_column(name: str, n: int) -> st.SearchStrategy[pa.Array]:
    """The column a writer meant to write under `name` (most examples should be valid datasets)."""
    def of(values, typ=None):
        return st.lists(values, min_size=n, max_size=n).map(lambda v: pa.array(v, typ))

    if name in ("source",):
        return of(st.sampled_from(["real", "synthetic"]))
    if name == "weight":
        return of(st.floats(0, 2, width=32), pa.float32())
    if name == "is_noise":
        return of(st.booleans())
    return of(st.integers(0, 5), pa.int64())


def _table(names: st.SearchStrategy[list[str]]) -> st.SearchStrategy[pa.Table]:
    """Mostly the intended column kinds with some replaced by any kind, or any kind throughout."""

    def columns(names_n_mode):
        names, n, plausible = names_n_mode
        pick = (lambda c: st.one_of([_plausible_column(c, n)] * 6 + [_any_column(n)])) if plausible else (lambda c: _any_column(n))
        return st.fixed_dictionaries({c: pick(c) for c in names})

    return st.tuples(names, st.integers(0, 4), st.sampled_from([True, True, False])).flatmap(columns).map(pa.table)


@FUZZ
@given(
    table=_table(st.just(["user_id", "item_id", "ts"]) | st.lists(st.sampled_from(["user_id", "item_id", "timestamp", "user", "item", "ts", "x"]), unique=True, max_size=4)),
    junk=st.none() | st.binary(max_size=100),
)
def test_parquet(table, junk):
    def write(root: Path) -> Path:
        path = root / "clicks.parquet"
        pq.write_table(table, path) if junk is None else path.write_bytes(junk)
        return path

    _load_or_data_error(write)


CANONICAL_NAMES = INTERACTIONS_SCHEMA.names + ["is_noise"]


@FUZZ
@given(
    inter=_table(st.sampled_from([CANONICAL_NAMES[:5], CANONICAL_NAMES]) | st.lists(st.sampled_from(CANONICAL_NAMES + ["x"]), unique=True, max_size=7)),
    items=st.none() | st.sampled_from(["exact", "shuffled", "missing", "duplicated"]) | st.binary(max_size=60),
    report=st.none() | JSON_VALUES.map(json.dumps).map(str.encode) | st.binary(max_size=40),
)
def test_canonical(inter, items, report):
    def write(root: Path) -> Path:
        d = root / "ds"
        d.mkdir()
        pq.write_table(inter, d / "interactions.parquet")
        if isinstance(items, bytes):
            (d / "items.parquet").write_bytes(items)
        elif items is not None:
            col = inter.column("item_id") if "item_id" in inter.column_names else None
            ids = np.unique(col.to_numpy()) if col is not None and pa.types.is_signed_integer(col.type) and not col.null_count else np.arange(3)
            ids = {"exact": ids, "shuffled": ids[::-1], "missing": ids[1:], "duplicated": np.r_[ids, ids[:1]]}[items]
            n = len(ids)
            pq.write_table(pa.table({"item_id": pa.array(ids, pa.int64()), "title": pa.array(["t"] * n),
                                     "categories": pa.array([["c"]] * n), "text": pa.array([None] * n, pa.string())}),
                           d / "items.parquet")
        if report is not None:
            (d / "report.json").write_bytes(report)
        return d

    _load_or_data_error(write)
