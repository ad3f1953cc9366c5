import json
import subprocess
import sys

import pyarrow.parquet as pq

from llm_i2i.cli import main


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "llm_i2i", "--help"], capture_output=True, text=True, check=True).stdout
    assert "baseline" in out and "index" in out


def test_baseline_writes_metrics_contract(tmp_path):
    assert main(["baseline", "--model", "swing", "--set", "alpha1=5", "--out", str(tmp_path)]) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    for k in (5, 10, 20, 50, 100, 200):
        assert 0.0 <= m[f"recall@{k}"] <= 1.0 and f"ndcg@{k}" in m
        assert f"recall@{k}" in m["long_tail"] and f"recall@{k}" in m["non_long_tail"]
    assert m["protocol"]["preset"] == "paper" and m["backbone_config"]["alpha1"] == 5.0
    assert m["recall@200"] >= m["recall@10"] > 0


def test_index_from_csv(tmp_path):
    csv = tmp_path / "clicks.csv"
    rows = ["user,item,timestamp"] + [f"{u},{i},{t}" for u in range(30) for t, i in enumerate(((u % 5) * 3 + d) % 15 for d in range(4))]
    csv.write_text("\n".join(rows) + "\n")
    assert main(["index", "--interactions", str(csv), "--model", "swing", "--set", "k=3", "--out", str(tmp_path / "idx")]) == 0
    t = pq.read_table(tmp_path / "idx" / "neighbors.parquet")
    assert t.column_names == ["item_id", "neighbor_id", "score", "rank"]
    assert max(t.column("rank").to_pylist()) == 2
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["backbone"] == "swing" and manifest["rows"] == t.num_rows


def test_bad_input_exits_2_with_named_error(tmp_path, capsys):
    csv = tmp_path / "bad.csv"
    csv.write_text("user,item\n1,2\n1,x\n")
    assert main(["index", "--interactions", str(csv), "--out", str(tmp_path / "o")]) == 2
    assert "bad.csv:3" in capsys.readouterr().err


def _fused_dataset(tmp_path):
    """A canonical dataset dir whose later rows are marked synthetic, as the pipeline's fuse/dataset is."""
    import numpy as np
    import pyarrow as pa

    from llm_i2i.data.dataset import Dataset
    from llm_i2i.data.readers import save_dataset
    from llm_i2i.data.schema import empty_items, interaction_table

    rng = np.random.default_rng(0)
    users, items, ts, source = [], [], [], []
    for u in range(40):
        seq = rng.choice(12, 7, replace=False)
        users += [u] * 7
        items += seq.tolist()
        ts += list(range(7))
        source += ["real"] * 4 + ["synthetic"] * 3
    table = interaction_table(users, items, ts, source=pa.array(source, pa.string()))
    return save_dataset(Dataset("fused", table, empty_items(np.arange(12))), tmp_path / "fused")


def test_index_weighs_synthetic_rows_like_the_pipeline(tmp_path):
    from llm_i2i.data import load_dataset
    from llm_i2i.data.sequences import real_items_per_user
    from llm_i2i.i2i.bm25 import BM25

    path = _fused_dataset(tmp_path)
    assert main(["index", "--interactions", str(path), "--model", "bm25", "--out", str(tmp_path / "idx")]) == 0
    built = pq.read_table(tmp_path / "idx" / "neighbors.parquet")
    ds = load_dataset(path)
    seqs = ds.sequences()
    n_real = real_items_per_user(ds.interactions, seqs, str(path))
    assert n_real.tolist() == [4] * 40
    assert built.equals(BM25().fit(seqs, None, n_real).to_table())
    assert not built.equals(BM25().fit(seqs).to_table())  # all rows at full weight: another index
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["synthetic_interactions"] == 120


def test_baseline_refuses_synthetic_rows(tmp_path, capsys):
    path = _fused_dataset(tmp_path)
    assert main(["baseline", "--data", str(path), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "field 'source' marks synthetic interactions" in err and "Traceback" not in err
