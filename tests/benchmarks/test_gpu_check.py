"""benchmarks/gpu_check.py in its CPU dry-run mode: the same code path a GPU machine runs, on a tiny model."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks import gpu_check

REPO = Path(__file__).resolve().parents[2]


def test_batches_match_the_projects_generator_prompts():
    """The vectorised batch builder renders what the project's prompt code renders, with one label per item."""
    from llm_i2i.llm.prompts import encode_prompts, generator_prompt
    from llm_i2i.llm.tokenizer import build_tokenizer, item_vocabulary

    items = gpu_check.synthetic_items(40)
    tok = build_tokenizer(items, vocab_size=300)
    size = replace(gpu_check.CPU_SIZE, items=40, batch=3, seq_items=7)
    batch = gpu_check.Batches(tok, size, seed=3).next("cpu")
    item_ids, token_ids = item_vocabulary(tok)
    column_of = {int(t): c for c, t in enumerate(token_ids)}
    for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
        history = [int(item_ids[column_of[t]]) for t in ids if t in column_of]
        full = encode_prompts(tok, [generator_prompt([*history, -1][:-1], max_history=None)])[0]
        assert len(history) == size.seq_items - 1 and ids == full  # the last item is only a target
        targets = [lab for lab in labels if lab >= 0]
        assert len(targets) == size.seq_items and targets[:-1] == [column_of[t] for t in ids if t in column_of]


def _run(tmp_path, *args):
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "LLM_I2I_HEAVY_LOCK": str(tmp_path / "lock"),
           "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--cpu", "--out", str(tmp_path / "gc"), *args],
                         capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads((tmp_path / "gc.json").read_text())


def _check_report(rec, variants):
    assert set(rec["result"]["variants"]) == set(variants) and all(rec["checks"].values())
    for r in rec["result"]["variants"].values():
        assert r["tokens_per_s"] > 0 and r["peak_memory_gib"] > 0 and r["timed_tokens"] > 0
        assert r["losses_finite"] and r["loss_last"] < r["loss_first"]  # a few AdamW steps on one distribution
    e = rec["result"]["engine_topn"]
    assert e["equal"] and e["rows_identical"] == e["users"] and e["max_abs_logprob_diff"] == 0.0  # CPU vs CPU


def test_cpu_dry_run_plain_loop_and_engine_check(tmp_path):
    """In this process (the imports are the cost): the plain bf16 loop and the engine check, exit status 0."""
    assert gpu_check.main(["--cpu", "--variants", "plain", "--out", str(tmp_path / "gc")]) == 0
    rec = json.loads((tmp_path / "gc.json").read_text())
    _check_report(rec, ["plain"])
    assert rec["command"].startswith("python -m benchmarks.gpu_check --cpu")
    assert "| plain |" in (tmp_path / "gc.md").read_text()


@pytest.mark.slow
def test_cpu_dry_run_with_deepspeed_zero2(tmp_path):
    """Both variants; DeepSpeed on CPU JIT-builds its shared-memory comm op once (minutes on 2 cores)."""
    rec = _run(tmp_path)
    _check_report(rec, ["plain", "zero2"])
    plain, zero2 = rec["result"]["variants"]["plain"], rec["result"]["variants"]["zero2"]
    assert zero2["loss_first"] == pytest.approx(plain["loss_first"], rel=1e-3)  # same init, same first batch
