"""Issue 18: the same --out with changed data retrains the SFT stages; the same data again does not.

Three runs of the real pipeline (real SFT of two tiny models) up to `sft_discriminator` on one output directory:
data A, data A again, then data B written to the same path. For each run: what the SFT stages did, their seconds,
and the SHA-256 of the shipped generator weights, to see whether a changed dataset ships a model trained on it.

    python -m benchmarks.pipeline_data_change --work /tmp/dc
writes benchmarks/results/pipeline_data_change.{json,md}. `pipeline_data_change_before.json` is the same script run
on main e31a59a (before the work directory was keyed by the data): run 3 "ran" in 0.03 s and shipped run 1's weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Sequence

from benchmarks._common import provenance, run_record, write_result

SYNTHETIC = {"n_users": 300, "n_items": 80, "n_groups": 4}
TINY_MODEL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "vocab_size": 200}
CONFIG = {
    "backbones": ["swing"],
    "sft_generator": {"epochs": 2, "batch_size": 32, "eval_users": 100, "threads": 1, "model": TINY_MODEL},
    "sft_discriminator": {"epochs": 1, "batch_size": 32, "eval_users": 100, "threads": 1},
    "ablations": False,
}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def one_run(label: str, data: Path, out: Path) -> dict:
    from llm_i2i.config import from_dict
    from llm_i2i.llm.runners import Runners
    from llm_i2i.pipeline.config import PipelineConfig
    from llm_i2i.pipeline.runner import run_pipeline
    from llm_i2i.pipeline.stages import real_llm_ops
    from ray_jobs.batch_inference import map_with_engine

    t0 = time.perf_counter()
    ops = real_llm_ops(Runners(batch_inference=map_with_engine))
    result = run_pipeline(from_dict(PipelineConfig, {**CONFIG, "data": str(data)}), str(out), ops,
                          until="sft_discriminator")
    wall = time.perf_counter() - t0
    history = {h["stage"]: h for h in result["history"]}
    return {
        "run": label,
        "data_sha256": sha(data / "interactions.parquet"),
        **{f"{s}_status": history[s]["status"] for s in ("prepare", "sft_generator", "sft_discriminator")},
        **{f"{s}_seconds": round(history[s]["seconds"], 2) for s in ("sft_generator", "sft_discriminator")},
        "generator_weights_sha256": sha(out / "sft_generator" / "model" / "model.safetensors"),
        "generator_trained_on_this_data": json.loads(
            (out / "sft_generator" / "model" / "llm_i2i_manifest.json").read_text())["examples"],
        "wall_seconds": round(wall, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    from llm_i2i.data import load_dataset, save_dataset

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True, help="scratch directory (emptied first)")
    p.add_argument("--out", default="pipeline_data_change", help="result stem (under benchmarks/results/)")
    args = p.parse_args(argv)
    record = {**run_record("pipeline_data_change", argv), "config": CONFIG, "synthetic": SYNTHETIC}
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    data, out = work / "data", work / "out"
    rows = []
    for label, seed in (("1: data A", 1), ("2: data A again", 1), ("3: data B at the same path", 2)):
        if seed != 1 or not data.exists():
            save_dataset(load_dataset("default", **SYNTHETIC, seed=seed), data)
        rows.append(one_run(label, data, out))
        print(json.dumps(rows[-1]), flush=True)
    record.update(runs=rows,
                  retrained_on_new_data=rows[2]["generator_weights_sha256"] != rows[0]["generator_weights_sha256"],
                  skipped_on_same_data=rows[1]["sft_generator_status"] == "skipped")
    cols = ["run", "data_sha256", "prepare_status", "sft_generator_status", "sft_generator_seconds",
            "sft_discriminator_status", "generator_weights_sha256"]
    table = ["| " + " | ".join(cols) + " | generator trained on (targets) |", "|" + "---|" * (len(cols) + 1)]
    table += ["| " + " | ".join(str(r[c]) for c in cols) + f" | {r['generator_trained_on_this_data']['targets']} |"
              for r in rows]
    md = ("# Same --out, changed data: the SFT stages retrain\n\n" + provenance(record) + "\n\n"
          "Real pipeline (tiny models, real SFT) up to `sft_discriminator`, three runs on one output directory. "
          "Data B is written to the same path as data A.\n\n" + "\n".join(table) + "\n\n"
          f"Retrained on new data: **{record['retrained_on_new_data']}**; skipped on the same data: "
          f"**{record['skipped_on_same_data']}**. Before (main e31a59a, `pipeline_data_change_before.json`): run 3 "
          "'ran' in 0.03 s and shipped run 1's weights (same SHA-256, trained on data A's 2460 targets).\n")
    write_result(args.out, record, md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
