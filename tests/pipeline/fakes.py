"""Deterministic stand-ins for the LLM calls, so orchestration is tested without training a model.

They write the same tables as `llm_i2i.llm.generate` / `discriminate` (candidates with rank, pairs with
confidence + error) and count their calls, so tests can assert what ran and what was skipped. `sft` reuses a
finished checkpoint in its work directory when the config matches, as `llm_i2i.llm.sft.run_sft` does, and
records which data it was trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from llm_i2i.data import leave_one_out, read_canonical
from llm_i2i.eval.evaluate import evaluate_topk
from llm_i2i.pipeline.stages import LLMOps


class FakeLLM:
    def __init__(self, fail_in: str | None = None):
        self.calls: Counter = Counter()
        self.sft_configs: dict[str, dict] = {}  # role -> the last SFT config it was called with
        self.fail_in = fail_in  # raise inside this op once, to simulate a crash mid-stage

    def _maybe_fail(self, op: str) -> None:
        if self.fail_in == op:
            self.fail_in = None
            raise RuntimeError(f"injected failure in {op}")

    def sft(self, cfg, dataset_dir: Path, out_dir: Path, shared_uri: str | None = None) -> Path:
        self.sft_configs[cfg["role"]] = cfg
        manifest = out_dir / "llm_i2i_manifest.json"
        if manifest.exists() and json.loads(manifest.read_text())["config"] == cfg:
            self.calls["sft_reused_" + cfg["role"]] += 1
            return out_dir
        self.calls["sft_" + cfg["role"]] += 1
        out_dir.mkdir(parents=True, exist_ok=True)
        data = hashlib.sha256((Path(dataset_dir) / "interactions.parquet").read_bytes()).hexdigest()
        manifest.write_text(json.dumps({"role": cfg["role"], "fake": True, "config": cfg, "trained_on": data}))
        return out_dir

    def generate(self, cfg, ckpt, dataset_dir, out_path):
        self.calls["generate"] += 1
        split = leave_one_out(read_canonical(dataset_dir).sequences())
        n = int(cfg.get("recall_number", 5))
        rng = np.random.default_rng(0)
        users = np.repeat(split.train.user_ids, n)
        items = rng.choice(split.full.item_ids, len(users))
        # write part of the output, then maybe crash: a half-written stage must not count as finished
        pq.write_table(pa.table({"user_id": users[:10]}), out_path)
        self._maybe_fail("generate")
        pq.write_table(pa.table({"user_id": users, "item_id": items, "rank": np.tile(np.arange(n), split.train.n_users),
                                 "score": np.zeros(len(users), np.float32), "error": pa.nulls(len(users), pa.string())}),
                       out_path)
        return {"users": int(split.train.n_users)}

    def discriminate(self, cfg, ckpt, dataset_dir, pairs_path, out_path):
        self.calls["discriminate"] += 1
        pairs = pq.read_table(pairs_path)
        pairs = pairs.drop([c for c in ("confidence", "error") if c in pairs.column_names])
        rng = np.random.default_rng(pairs.num_rows)
        conf = rng.choice([0.2, 0.7, 0.999, 1.0], pairs.num_rows).astype(np.float32)
        pq.write_table(pairs.append_column("confidence", pa.array(conf)).append_column(
            "error", pa.nulls(pairs.num_rows, pa.string())), out_path)
        return {"pairs_in": pairs.num_rows}

    def evaluate_generator(self, ckpt, dataset_dir, eval_cfg, gen_cfg):
        """Most-popular items for everyone: a real ranking, scored by the real evaluator."""
        self.calls["evaluate_generator"] += 1
        split = leave_one_out(read_canonical(dataset_dir).sequences())
        top = np.argsort(-split.train.item_counts(), kind="stable")[: eval_cfg.max_k]
        return evaluate_topk(np.tile(top, (split.full.n_users, 1)), split, eval_cfg)

    def discriminator_scores(self, ckpt, dataset_dir, max_users):
        """Two positives and two negatives per kind; by hand, AUC random = (1 + 1 + 1 + 1/2) / 4, hard = 1/2."""
        self.calls["discriminator_scores"] += 1
        return {"random": {"labels": np.array([1, 0, 1, 0]), "scores": np.array([0.8, 0.3, 0.4, 0.4])},
                "hard": {"labels": np.array([1, 0, 1, 0]), "scores": np.full(4, 0.5)}}

    def ops(self) -> LLMOps:
        return LLMOps(self.sft, self.generate, self.discriminate, self.evaluate_generator, self.discriminator_scores)


class HangingLLM(FakeLLM):
    """Writes part of `generate`'s output, signals `ready`, then hangs until the test SIGKILLs the process."""

    def __init__(self, ready: Path):
        super().__init__()
        self.ready = ready

    def generate(self, cfg, ckpt, dataset_dir, out_path):
        pq.write_table(pa.table({"user_id": np.arange(10)}), out_path)
        self.ready.write_text(str(os.getpid()))
        time.sleep(600)
        raise AssertionError("should have been killed")


if __name__ == "__main__":  # python -m tests.pipeline.fakes CONFIG_JSON OUT READY: a pipeline run to be killed
    from llm_i2i.config import from_dict
    from llm_i2i.pipeline.config import PipelineConfig
    from llm_i2i.pipeline.runner import run_pipeline

    config, out, ready = sys.argv[1:]
    run_pipeline(from_dict(PipelineConfig, json.loads(config)), out, HangingLLM(Path(ready)).ops())
