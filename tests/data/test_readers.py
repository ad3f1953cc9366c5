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
        (["1 2 x"], None, r"Toy\.txt:1: unparsable id 'x'"),
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


def test_synthetic_default_has_structure_and_labelled_noise():
    ds = load_dataset(None)
    seqs = ds.sequences()
    assert seqs.lengths.min() >= 5
    noise = ds.interactions.column("is_noise").to_numpy()
    assert 0.02 < noise.mean() < 0.1
    counts = np.sort(seqs.item_counts())[::-1]
    assert counts[: len(counts) // 10].sum() > 0.3 * counts.sum()  # power-law head
    assert all(ds.items.column("title").to_pylist())
    again = load_dataset(None)
    assert again.interactions.equals(ds.interactions)  # seeded


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
