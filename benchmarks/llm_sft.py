"""SFT throughput: plain single-process PyTorch vs Ray Train + DeepSpeed ZeRO-2 (2 workers), same run, same data.

CPU (default): the default small generator on the first `--users` users of Beauty, one epoch each way;
tokens/s = non-padding tokens per second of training (validation excluded), wall = whole `run_sft` call.
GPU (`--gpu --base-model /path/to/Llama-2-7b-hf`): the same comparison on a pretrained local checkpoint with
bf16 + FlashAttention-2 (ModelConfig.attn_implementation='auto') and DeepSpeed ZeRO-2 over NCCL, one worker per
GPU (`--gpu-workers`). Nothing here needs network access.

    python -m benchmarks.llm_sft --users 3000
Results: benchmarks/results/llm_sft.{md,json}
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from benchmarks._common import DATA_ROOT, REPO, provenance, run_locked, run_record, write_result
from llm_i2i.config import load_config, to_dict
from llm_i2i.data import Dataset, load_dataset, save_dataset
from llm_i2i.llm.modeling import load_checkpoint
from llm_i2i.llm.sft import SFTConfig, run_sft
from llm_i2i.progress import setup_logging


def subset(name: str, data_root: Path, users: int) -> Path:
    """The first `users` users of a dataset (all their interactions), as a canonical dir under out/."""
    import pyarrow.compute as pc

    out = REPO / "out" / "data" / f"{name}_{users}u"
    if not (out / "interactions.parquet").exists():
        ds = load_dataset(data_root / name)
        keep = pc.is_in(ds.interactions.column("user_id"), value_set=ds.interactions.column("user_id").unique()[:users])
        inter = ds.interactions.filter(keep)
        items = ds.items.filter(pc.is_in(ds.items.column("item_id"), value_set=inter.column("item_id").unique()))
        save_dataset(Dataset(f"{name}_{users}u", inter, items, {"subset_of": name, "users": users}), out)
    return out


def measure(cfg: SFTConfig, data: Path, out: Path) -> dict:
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    runner = None
    if cfg.distributed:
        from ray_jobs.train_llm import RaySFTRunner

        runner = RaySFTRunner()
    run_sft(cfg, data, out, runner)
    wall = time.perf_counter() - t
    _, _, manifest = load_checkpoint(out)
    tr = manifest["training"]
    return {"tokens_per_s": tr["tokens_per_s"], "wall_seconds": wall, "history": tr["history"],
            "valid_metrics": manifest["metrics"], "config": to_dict(cfg)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=str(DATA_ROOT))
    p.add_argument("--dataset", default="Beauty")
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--gpu", action="store_true", help="GPU path: needs --base-model and CUDA")
    p.add_argument("--base-model", help="local HF checkpoint (e.g. Llama-2-7b-hf) for the GPU path")
    p.add_argument("--gpu-workers", type=int, default=1)
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args(argv)
    setup_logging()
    record = run_record("llm_sft", argv)
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    data = subset(args.dataset, Path(args.data_root), args.users)
    common = ["epochs=1", "eval_users=500", *args.set]
    if args.gpu:
        import torch

        if not torch.cuda.is_available() or not args.base_model:
            raise SystemExit("--gpu needs CUDA and --base-model PATH")
        common += [f"model.base_model={args.base_model}", "model.dtype=bfloat16", "batch_size=16",
                   "lr=5e-5", "max_length=1024"]
        variants = {"plain_1gpu": [], f"ray_deepspeed_zero2_{args.gpu_workers}gpu": [f"num_workers={args.gpu_workers}", "use_ray=true"]}
    else:
        variants = {"plain_1proc": [], "ray_deepspeed_zero2_2workers": ["num_workers=2", "zero_stage=2"]}
    t0 = time.perf_counter()
    res = {}
    for name, sets in variants.items():
        cfg = load_config(SFTConfig, None, [*common, *sets])
        res[name] = measure(cfg, data, REPO / "out" / "bench" / "llm_sft" / name)
    ref = res[next(iter(variants))]["tokens_per_s"]
    record.update({"gpu": args.gpu, "dataset": str(data), "results": res, "seconds": time.perf_counter() - t0})
    tag = "llm_sft_gpu" if args.gpu else "llm_sft"
    lines = [f"# SFT throughput ({'GPU' if args.gpu else 'CPU'})", "", provenance(record), "", f"Data: `{data}`.", "",
             "| variant | tokens/s | ratio vs first | wall s (incl. startup + validation) | valid R@10 |", "|---|---|---|---|---|"]
    for name, r in res.items():
        lines.append(f"| {name} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / ref:.2f} | {r['wall_seconds']:.0f} | "
                     f"{r['valid_metrics'].get('valid_recall@10', float('nan')):.4f} |")
    write_result(tag, record, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_locked(main))
