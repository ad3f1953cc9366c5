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
