"""report.md opens with the three-line summary, shows the backbones plot, and says in words when no cut helped."""

from __future__ import annotations

import json

import pytest

from llm_i2i.pipeline.report import render_markdown, summary_lines
from llm_i2i.pipeline.runner import run_pipeline
from tests.pipeline.fakes import FakeLLM
from tests.pipeline.test_pipeline import tiny_config


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    run_pipeline(tiny_config(backbones=["swing"], recall_numbers=[], confidence_levels=[]), str(out), FakeLLM().ops())
    return out, json.loads((out / "report.json").read_text())


def test_summary_opens_the_report_and_the_cut_is_documented(report):
    out, r = report
    md = (out / "report.md").read_text().splitlines()
    swing = r["backbones"]["swing"]
    assert md[2].startswith("**swing Recall@10:") and f"{swing['baseline']['recall@10']:.4f}" in md[2]
    assert md[3].startswith("Long-tail Recall@10")
    cut = r["synthetic_pairs"]["cut"]
    assert cut["mode"] == "auto" and cut["selected_on"] == "valid" and cut["objective"] == "recall@10"
    assert [row["cut"] for row in cut["curve"]][0] is None and len(cut["curve"]) > 1
    if not cut["keep_none"]:
        assert r["synthetic_pairs"]["threshold"] == cut["cut"] and "VALIDATION" in md[4]
        assert f"{r['synthetic_pairs']['kept']} kept" in md[4]
    assert "![backbones with and without LLM-I2I](plots/backbones.png)" in md
    assert {"plots/backbones.png", "plots/cut.png"} <= set(r["plots"])
    assert all((out / p).stat().st_size > 0 for p in r["plots"])


def test_keep_none_is_said_in_words(report):
    _, r = report
    cut = r["synthetic_pairs"]["cut"]
    none = {**cut, "cut": None, "keep_none": True,
            "curve": [{**row, "recall@10": 0.0} if row["cut"] is not None else row for row in cut["curve"]]}
    r = {**r, "synthetic_pairs": {**r["synthetic_pairs"], "cut": none, "kept": 0, "threshold": None}}
    line = summary_lines(r)[2]
    assert line.startswith("No confidence cut helped on validation") and "equals the baseline" in line
    assert f"none of the {r['synthetic_pairs']['generated']} generated pairs" in line
    assert "keep none (chosen)" in render_markdown(r)


def test_discriminator_block_recomputed_from_the_artifacts(report):
    """AUC on the candidates and the precision of all generated vs kept pairs, redone by brute force from the
    discriminate stage's scored table, the fuse stage's kept table and the split; one line and a plot in the report."""
    import pyarrow.parquet as pq

    from llm_i2i.data import leave_one_out, read_canonical
    from tests.eval.test_discriminator import brute_auc

    out, r = report
    d = r["discriminator"]
    full = leave_one_out(read_canonical(out / "prepare" / "dataset").sequences()).full
    truth = {int(u): [int(full.item_ids[j]) for j in full.user(row)[-2:]] for row, u in enumerate(full.user_ids)
             if len(full.user(row)) >= 3}  # [valid, test]
    scored = [p for p in pq.read_table(out / "discriminate" / "scored.parquet").to_pylist() if p["user_id"] in truth]
    kept = [p for p in pq.read_table(out / "fuse" / "variants" / "llm_i2i" / "interactions.parquet").to_pylist()
            if p["source"] == "synthetic"]
    hit = [p["item_id"] == truth[p["user_id"]][1] for p in scored]
    assert d["auc"]["candidates_test"] == pytest.approx(brute_auc(hit, [p["confidence"] for p in scored]))
    assert d["auc"]["generator_rank_test"] == pytest.approx(brute_auc(hit, [-p["rank"] for p in scored]))
    gen = d["kept_precision"]["generated"]
    assert (gen["pairs"], gen["test_hits"]) == (len(scored), sum(hit))
    k = d["kept_precision"]["kept"]
    assert k["pairs"] + k["user_not_evaluated"] == len(kept) == r["synthetic_pairs"]["kept"]
    assert k["test_hits"] == sum(p["item_id"] == truth.get(p["user_id"], [None, None])[1] for p in kept)
    assert k["valid_or_test_hits"] == sum(p["item_id"] in truth.get(p["user_id"], []) for p in kept)
    assert d["kept_precision"]["cut"]["cut"] == r["synthetic_pairs"]["cut"]["cut"]
    assert d["auc"]["random"] == r["discriminator_auc"] and d["calibration"]["random_negatives"]["n"] == 4
    assert sum(b["count"] for b in d["calibration"]["candidates_test"]["bins"]) == len(scored)
    md = (out / "report.md").read_text()
    assert "Discriminator on the test split: ROC-AUC 0.8750 vs random negatives, 0.5000 vs Swing-hard" in md
    assert "plots/calibration.png" in r["plots"] and (out / "plots" / "calibration.png").read_bytes()[:4] == b"\x89PNG"


def test_discriminator_line_when_the_cut_kept_none(report):
    from llm_i2i.pipeline.report import discriminator_line

    _, r = report
    d = r["discriminator"]
    none = {**d, "kept_precision": {**d["kept_precision"], "cut": {"mode": "auto", "cut": None, "keep_none": True},
                                    "kept_over_generated_test": None}}
    line = discriminator_line(none)
    assert "none kept (the cut chose keep none)" in line and f"of {d['kept_precision']['generated']['pairs']} generated" in line
