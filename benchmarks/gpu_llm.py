"""GPU benchmark: vLLM vs HF engine for generation + discrimination on a local llm-i2i checkpoint.

Needs a CUDA machine with the project's [gpu] extra (vLLM) installed and an llm-i2i checkpoint (the
output of `llm-i2i sft`, e.g. a Llama-2-7B generator) plus the canonical dataset it was trained on:

    python -m benchmarks.gpu_llm --checkpoint /models/beauty-generator --data /data/beauty-canonical \
        [--users 5000] [--recall 50] [--engines hf,vllm] [--hf-batch 64] [--tag gpu_llm]

Both engines run in this process on the same GPU, one after the other (the HF model is freed before vLLM
starts), through the same `run_generate` / `run_discriminate` code path (num_actors=0). Results go to
benchmarks/results/<tag>.{json,md} with the GPU name, the command and ratios vs the HF engine.
This session had no GPU: the script has NOT been run yet, and no GPU numbers are recorded.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

from benchmarks._common import provenance, run_locked, run_record, write_result
from benchmarks.llm_inference import throughput_table
from llm_i2i.llm.discriminate import DiscriminateConfig, run_discriminate
from llm_i2i.llm.generate import GenerateConfig, run_generate
from llm_i2i.progress import setup_logging
from ray_jobs.batch_inference import map_with_engine


def gpu_name() -> str:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("gpu_llm.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    return torch.cuda.get_device_name(0)


def engine_options(engine: str, args: argparse.Namespace) -> dict:
    if engine == "hf":
        return {"device": "cuda", "dtype": "bfloat16", "forward_batch_size": args.hf_batch}
    return {"dtype": "bfloat16", "max_model_len": args.max_model_len, "max_num_seqs": args.vllm_max_seqs,
            "gpu_memory_utilization": args.gpu_memory_utilization}


def run_engine(engine: str, args: argparse.Namespace, tmp: Path) -> dict:
    """Generate for `--users` users, then discriminate the candidates; both through the library entry points."""
    import torch

    opts = engine_options(engine, args)
    try:
        g = run_generate(GenerateConfig(engine=engine, engine_options=opts, recall_number=args.recall,
                                        batch_size=args.batch_size, num_actors=0, max_users=args.users),
                         args.checkpoint, args.data, tmp / f"cand_{engine}.parquet", map_with_engine)
        d = run_discriminate(DiscriminateConfig(engine=engine, engine_options=opts, batch_size=args.batch_size,
                                                num_actors=0),
                             args.checkpoint, args.data, tmp / f"cand_{engine}.parquet", tmp / f"scored_{engine}.parquet",
                             map_with_engine)
    finally:
        gc.collect()
        torch.cuda.empty_cache()
    return {"generate_users_per_s": g["users_per_s"], "generate_seconds": g["inference_seconds"], "users": g["users_in"],
            "discriminate_pairs_per_s": d["pairs_per_s"], "discriminate_seconds": d["inference_seconds"],
            "pairs": d["pairs_in"], "error_rows": g["error_rows"] + d["error_rows"], "options": opts}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="llm-i2i checkpoint dir (HF format + llm_i2i_manifest.json)")
    p.add_argument("--data", required=True, help="canonical dataset dir the checkpoint was trained on")
    p.add_argument("--users", type=int, default=5000)
    p.add_argument("--recall", type=int, default=50)
    p.add_argument("--engines", default="hf,vllm")
    p.add_argument("--batch-size", type=int, default=512, help="users/pairs per engine call")
    p.add_argument("--hf-batch", type=int, default=64, help="HF forward-pass micro-batch")
    p.add_argument("--vllm-max-seqs", type=int, default=512)
    p.add_argument("--max-model-len", type=int, default=1024)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    p.add_argument("--tag", default="gpu_llm")
    args = p.parse_args(argv)
    setup_logging()
    gpu = gpu_name()
    record = run_record("gpu_llm", argv)
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for engine in args.engines.split(","):
            t0 = time.perf_counter()
            res[engine] = run_engine(engine, args, Path(tmp))
            res[engine]["wall_seconds"] = time.perf_counter() - t0
    table = throughput_table(res, "hf" if "hf" in res else next(iter(res)))
    record.update({"gpu": gpu, "checkpoint": args.checkpoint, "results": res})
    lines = ["# LLM batch inference on GPU: vLLM vs HF", "", provenance(record), "",
             f"GPU: {gpu}. Checkpoint `{args.checkpoint}`. Ratios against the HF engine of this run.", "", *table]
    write_result(args.tag, record, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_locked(main))
