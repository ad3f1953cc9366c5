import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llm_i2i.data import DataError, load_dataset, read_canonical, save_dataset
from llm_i2i.data.readers import read_interactions_file, read_recbole, read_s3rec

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _s3rec(tmp_path: Path, lines: list[str], text: list[dict] | None = None) -> Path:
    d = tmp_path / "Toy"
    d.mkdir()
    (d / "Toy.txt").write_text("\n".join(lines) + "\n")
    if text is not None:
        (d / "item_text.jsonl").write_text("\n".join(json.dumps(t) for t in text) + "\n")
    return d


def test_s3rec_reads_sequences_in_order_with_titles(tmp_path):
    d = _s3rec(tmp_path, ["1 3 1 2", "2 2 3"], [{"item_id": i, "title": f"t{i}", "categories": [["A", "B"]]} for i in (1, 2, 3)])
    ds = read_s3rec(d)
    assert ds.interactions.num_rows == 5
    seqs = ds.sequences()
    assert [seqs.item_ids[seqs.user(u)].tolist() for u in range(2)] == [[3, 1, 2], [2, 3]]
    assert ds.items.column("title").to_pylist() == ["t1", "t2", "t3"]
    assert ds.items.column("categories").to_pylist()[0] == ["A > B"]
    assert ds.report["items_without_text"] == 0


@pytest.mark.parametrize(
    "lines, text, match",
    [
        (["1 2 x"], None, r"Toy\.txt:1: 'x' is not an integer id"),
        (["1 2 3", "2"], None, r"Toy\.txt:2: user 2 has no items"),
        (["1 2", "1 3"], None, r"Toy\.txt:2: user 1 already listed on line 1"),
        (["1 2 3"], [{"item_id": 9, "title": "ghost"}], r"item_text\.jsonl:1: item_id 9 does not occur"),
        (["1 2 3"], [{"title": "no id"}], r"item_text\.jsonl:1: missing field 'item_id'"),
    ],
)
def test_s3rec_bad_input_names_file_and_line(tmp_path, lines, text, match):
    d = _s3rec(tmp_path, lines, text)
    with pytest.raises(DataError, match=match):
        read_s3rec(d)


def test_item_text_bad_json_names_line(tmp_path):
    d = _s3rec(tmp_path, ["1 2 3"], [{"item_id": 2, "title": "a"}])
    with open(d / "item_text.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(DataError, match=r"item_text\.jsonl:2: not valid JSON"):
        read_s3rec(d)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_dataset(tmp_path / "nope.csv")


def test_csv_orders_by_timestamp_and_reports_bad_field(tmp_path):
    p = tmp_path / "inter.csv"
    p.write_text("user,item,timestamp\n1,10,5\n1,11,2\n2,10,1\n")
    seqs = read_interactions_file(p).sequences()
    assert seqs.item_ids[seqs.user(0)].tolist() == [11, 10]
    p.write_text("user,item,timestamp\n1,10,5\n1,eleven,2\n")
    with pytest.raises(DataError, match=r"inter\.csv:3: field 'item': 'eleven' is not an integer"):
        read_interactions_file(p)
    p.write_text("who,item\n1,10\n")
    with pytest.raises(DataError, match="no user column"):
        read_interactions_file(p)


def test_parquet_interactions(tmp_path):
    p = tmp_path / "inter.parquet"
    pq.write_table(pa.table({"user_id": [1, 1, 2], "item_id": [5, 6, 5], "ts": [0, 1, 0]}), p)
    ds = load_dataset(p)
    assert ds.interactions.num_rows == 3 and ds.items.num_rows == 2


def test_recbole_atomic_files(tmp_path):
    d = tmp_path / "mini"
    d.mkdir()
    (d / "mini.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t7\t3\t20\n1\t8\t4\t10\n")
    (d / "mini.item").write_text("item_id:token\tmovie_title:token_seq\tclass:token_seq\n7\tHeat\tAction Crime\n8\tBabe\tComedy\n")
    ds = read_recbole(d)
    seqs = ds.sequences()
    assert seqs.item_ids[seqs.user(0)].tolist() == [8, 7]
    assert ds.items.column("title").to_pylist() == ["Heat", "Babe"]


def test_canonical_round_trip(tmp_path):
    ds = load_dataset(None, n_users=50, n_items=40)
    save_dataset(ds, tmp_path / "ds")
    back = read_canonical(tmp_path / "ds")
    assert back.interactions.equals(ds.interactions)
    assert back.items.equals(ds.items)
    assert back.name == "synthetic"


@pytest.mark.skipif(not (SHARED / "Beauty").exists(), reason="shared data not present")
@pytest.mark.parametrize("name, users, items, rows", [("Beauty", 22363, 12101, 198502), ("Toys_and_Games", 19412, 11924, 167597)])
def test_shared_amazon_datasets_match_published_counts(name, users, items, rows):
    ds = load_dataset(SHARED / name)
    seqs = ds.sequences()
    assert (seqs.n_users, seqs.n_items, int(seqs.indptr[-1])) == (users, items, rows)
    assert ds.report["items_without_text"] == 0


@pytest.mark.skipif(not (SHARED / "ml-100k").exists(), reason="shared data not present")
def test_shared_movielens():
    seqs = load_dataset(SHARED / "ml-100k").sequences()
    assert (seqs.n_users, seqs.n_items, int(seqs.indptr[-1])) == (943, 1682, 100000)


# ---------------------------------------------------------------- defects of issue 18: each ends in a named DataError

GOOD_TXT = b"1 1 2 3 4\n2 2 3 4 1\n3 3 4 1 2\n"
RECBOLE_INTER = b"user_id:token\titem_id:token\ttimestamp:float\n" + b"".join(
    f"{u}\t{i}\t{t}\n".encode() for u in (1, 2, 3) for t, i in enumerate((1, 2, 3, 4))
)


def _jsonl(*objs) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


def _s3rec_bytes(root: Path, txt: bytes, text: bytes | None = None) -> Path:
    d = root / "Toy"
    d.mkdir()
    (d / "Toy.txt").write_bytes(txt)
    if text is not None:
        (d / "item_text.jsonl").write_bytes(text)
    return d


def _file(root: Path, name: str, data: bytes) -> Path:
    (root / name).write_bytes(data)
    return root / name


def _recbole_bytes(root: Path, inter: bytes, item: bytes) -> Path:
    d = root / "mini"
    d.mkdir()
    (d / "mini.inter").write_bytes(inter)
    (d / "mini.item").write_bytes(item)
    return d


def _parquet(root: Path, columns: dict) -> Path:
    pq.write_table(pa.table(columns), root / "clicks.parquet")
    return root / "clicks.parquet"


# (case, writer(root) -> path given to load_dataset, regex the DataError must match: file and line or field)
BAD_INPUTS = [
    ("binary junk", lambda r: _s3rec_bytes(r, bytes(range(255, -1, -1)) * 4), r"Toy\.txt:1: not valid UTF-8 \(byte 0xff at column 1\)"),
    ("bad UTF-8", lambda r: _s3rec_bytes(r, GOOD_TXT, b'{"item_id": 1, "title": "caf\xe9"}\n'),
     r"item_text\.jsonl:1: not valid UTF-8"),
    ("binary junk CSV", lambda r: _file(r, "c.csv", b"user,item\n1,2\n\xff\xfe\x00\x01"), r"c\.csv:3: not valid UTF-8"),
    ("id beyond int64", lambda r: _s3rec_bytes(r, b"1 1 2\n2 1 99999999999999999999\n"),
     r"Toy\.txt:2: id '99999999999999999999' is outside int64"),
    ("id of 5000 digits", lambda r: _s3rec_bytes(r, b"1 " + b"7" * 5000 + b"\n"), r"Toy\.txt:1: id '7{37}\.\.\.' is outside int64"),
    ("timestamp of 5000 digits", lambda r: _file(r, "c.csv", b"user,item,ts\n1,2," + b"7" * 5000 + b"\n"),
     r"c\.csv:2: field 'ts': '7{37}\.\.\.' is outside int64"),
    ("id 2**63", lambda r: _file(r, "c.csv", b"user,item\n1,9223372036854775808\n"), r"c\.csv:2: field 'item'.*outside int64"),
    ("superscript digit", lambda r: _s3rec_bytes(r, "1 2 \u00b2\n".encode()), r"Toy\.txt:1: .*'\u00b2'.*ASCII digits"),
    ("non-ASCII digits", lambda r: _s3rec_bytes(r, "1 1 2\n\u0662 \u0661 \u0663\n".encode()), r"Toy\.txt:2: .*'\u0662'.*ASCII digits"),
    ("negative id", lambda r: _s3rec_bytes(r, b"1 1 2\n-2 5 1\n"), r"Toy\.txt:2: .*'-2' is negative"),
    ("negative id CSV", lambda r: _file(r, "c.csv", b"user,item\n1,-7\n"), r"c\.csv:2: field 'item': .*'-7' is negative"),
    ("underscore id", lambda r: _s3rec_bytes(r, b"1 1_000 2\n"), r"Toy\.txt:1: .*'1_000'"),
    ("1e3 id", lambda r: _file(r, "c.csv", b"user,item\n1,2\n1,1e3\n"), r"c\.csv:3: field 'item': '1e3'"),
    ("float id", lambda r: _file(r, "c.csv", b"user,item\n1,2.0\n"), r"c\.csv:2: field 'item': '2\.0'"),
    ("float id parquet", lambda r: _parquet(r, {"user_id": [1, 1], "item_id": [2.0, 3.0]}),
     r"clicks\.parquet: column 'item_id' has type double"),
    ("negative id parquet", lambda r: _parquet(r, {"user_id": [1, 1], "item_id": [2, -3]}),
     r"clicks\.parquet: column 'item_id' row 2: -3 is negative"),
    ("uint64 beyond int64 parquet", lambda r: _parquet(r, {"user_id": [1, 1], "item_id": pa.array([2, 2**63], pa.uint64())}),
     r"clicks\.parquet: column 'item_id' row 2: .*outside int64"),
    ("bool id parquet", lambda r: _parquet(r, {"user_id": [1, 1], "item_id": [True, False]}),
     r"clicks\.parquet: column 'item_id' has type bool"),
    ("junk parquet", lambda r: _file(r, "c.parquet", b"PAR1 not really"), r"c\.parquet: not a readable Parquet file"),
    ("JSONL null", lambda r: _s3rec_bytes(r, GOOD_TXT, b'{"item_id": 2, "title": "ok"}\nnull\n'),
     r"item_text\.jsonl:2: expected a JSON object, got null"),
    ("numeric title", lambda r: _s3rec_bytes(r, GOOD_TXT, _jsonl({"item_id": 1, "title": 5})),
     r"item_text\.jsonl:1: field 'title' must be a string, got 5"),
    ("boolean item_id", lambda r: _s3rec_bytes(r, GOOD_TXT, _jsonl({"item_id": True, "title": "t"})),
     r"item_text\.jsonl:1: field 'item_id' must be an integer, got true"),
    ("numeric categories", lambda r: _s3rec_bytes(r, GOOD_TXT, _jsonl({"item_id": 1, "categories": [1, 2]})),
     r"item_text\.jsonl:1: field 'categories'"),
    ("conflicting duplicate item_text", lambda r: _s3rec_bytes(r, GOOD_TXT, _jsonl({"item_id": 1, "title": "a"}, {"item_id": 1, "title": "b"})),
     r"item_text\.jsonl:2: item_id 1 already given a different record on line 1"),
    ("deeply nested JSON", lambda r: _s3rec_bytes(r, GOOD_TXT, b"[" * 100000 + b"\n"), r"item_text\.jsonl:1: not valid JSON"),
    ("single-column CSV", lambda r: _file(r, "c.csv", b"user\n1\n2\n"), r"c\.csv: no item column"),
    ("CSV field over 128 KB", lambda r: _file(r, "c.csv", b"user,item\n1,2\n1," + b"3" * 140_000 + b"\n"),
     r"c\.csv:3: field larger than field limit"),
    ("CSV NUL byte", lambda r: _file(r, "c.csv", b"user,item\n1,2\n1,\x003\n"), r"c\.csv:3: "),
    ("empty RecBole .item", lambda r: _recbole_bytes(r, RECBOLE_INTER, b""), r"mini\.item: empty file"),
    ("short RecBole .item row", lambda r: _recbole_bytes(r, RECBOLE_INTER, b"item_id:token\tmovie_title:token_seq\n1\tHeat\n2\n"),
     r"mini\.item:3: expected 2 fields, got 1"),
    ("RecBole .item without item_id", lambda r: _recbole_bytes(r, RECBOLE_INTER, b"movie_title:token_seq\nHeat\n"),
     r"mini\.item:1: no item_id column"),
    ("conflicting duplicate .item", lambda r: _recbole_bytes(r, RECBOLE_INTER, b"item_id:token\ttitle:token_seq\n1\tA\n1\tB\n"),
     r"mini\.item:3: item_id 1 already given a different record on line 2"),
    ("canonical junk parquet", lambda r: _file(r, "interactions.parquet", b"junk").parent,
     r"interactions\.parquet: not a readable Parquet file"),
    ("canonical float ids", lambda r: _canonical(r, item_id=pa.array([1.5, 2.0])), r"interactions\.parquet: column 'item_id' has type double"),
    ("canonical items missing", lambda r: _canonical(r, items_ids=[1]), r"items\.parquet: item_id\(s\) \[2\] .* no row"),
    ("canonical bad report", lambda r: _canonical(r, report=b"[1, 2]"), r"report\.json: expected a JSON object"),
]


def _canonical(root: Path, item_id=None, items_ids=None, report: bytes | None = None) -> Path:
    from llm_i2i.data.schema import empty_items

    d = root / "ds"
    d.mkdir()
    inter = {"user_id": [1, 1], "item_id": item_id if item_id is not None else [1, 2], "timestamp": [0, 1],
             "source": ["real", "real"], "weight": pa.array([1, 1], pa.float32())}
    pq.write_table(pa.table(inter), d / "interactions.parquet")
    pq.write_table(empty_items(items_ids if items_ids is not None else [1, 2]), d / "items.parquet")
    if report is not None:
        (d / "report.json").write_bytes(report)
    return d


@pytest.mark.parametrize("case, write, match", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_a_data_error_naming_file_and_line(tmp_path, case, write, match):
    path = write(tmp_path)
    with pytest.raises(DataError, match=match):
        load_dataset(path)


@pytest.mark.parametrize("case, write, match", BAD_INPUTS[:12:3], ids=[c[0] for c in BAD_INPUTS[:12:3]])
def test_cli_exits_2_naming_the_file(tmp_path, capsys, case, write, match):
    from llm_i2i.cli import main

    path = write(tmp_path)
    assert main(["baseline", "--data", str(path), "--model", "swing", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llm-i2i baseline: error: ") and path.name in err


def test_cli_bad_data_prints_no_traceback(tmp_path):
    import subprocess
    import sys

    path = _s3rec_bytes(tmp_path, b"1 2 99999999999999999999\n")
    r = subprocess.run([sys.executable, "-m", "llm_i2i", "baseline", "--data", str(path), "--model", "swing",
                        "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "Toy.txt:1: id '99999999999999999999' is outside int64" in r.stderr


def test_accepted_but_changed_is_counted_in_the_report(tmp_path):
    """A repeated identical item_text record and a category given as one string are accepted and counted."""
    d = _s3rec_bytes(
        tmp_path,
        GOOD_TXT,
        _jsonl({"item_id": 1, "title": "a"}, {"item_id": 1, "title": "a"}, {"item_id": 2, "title": "b", "categories": "Toys > Cars"}),
    )
    ds = load_dataset(d)
    assert ds.items.column("categories").to_pylist()[:2] == [[], ["Toys > Cars"]]
    assert ds.report["item_text_duplicate_records"] == 1
    assert ds.report["categories_given_as_string"] == 1
    assert ds.report["items_without_text"] == 2


def test_recbole_items_absent_from_interactions_are_counted(tmp_path):
    d = _recbole_bytes(tmp_path, RECBOLE_INTER, b"item_id:token\ttitle:token_seq\n1\tA\n1\tA\n9\tGhost\n")
    ds = load_dataset(d)
    assert ds.items.column("title").to_pylist() == ["A", None, None, None]
    assert ds.report["item_rows_without_interactions"] == 1
    assert ds.report["item_text_duplicate_records"] == 1
    assert ds.report["items_without_text"] == 3


def test_integral_float_timestamps_and_utf8_bom_are_read(tmp_path):
    p = _file(tmp_path, "c.csv", "\ufeffuser,item,timestamp\n1,10,1.6e9\n1,11,881250949.0\n".encode())
    seqs = load_dataset(p).sequences()
    assert seqs.item_ids[seqs.user(0)].tolist() == [11, 10]


def test_largest_int64_id_is_accepted(tmp_path):
    top = 2**63 - 1
    ds = load_dataset(_s3rec_bytes(tmp_path, f"{top} 0 {top}\n".encode()))
    assert ds.interactions.column("item_id").to_pylist() == [0, top]
