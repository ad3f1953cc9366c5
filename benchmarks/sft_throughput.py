"""Generator SFT throughput on a Sports-sized synthetic stand-in: the project's step before and after the chunked
item cross-entropy, a minimal plain PyTorch loop of the same model, and the arithmetic floor, in one run.

The stand-in has the shape of Amazon Sports (35.7k users, 18,357 items, 5-core: train histories of >= 3 items,
mean ~6.3, item popularity ~ rank^-0.9) and the shipped scratch model (ModelConfig defaults). Every variant starts
from the same weights and steps the same batches, interleaved round by round:
- `before`: the project's step (collate, lr schedule, PlainStepper) with the materialising `generator_loss`
  and gathered item rows, i.e. the loss path as it was;
- `after`: the same step as shipped (`chunked_generator_loss`), at each thread count in `--threads`;
- `plain`: a minimal PyTorch loop (decoder, item logits, weighted F.cross_entropy, clip, AdamW).
The floor is the step's matmul FLOPs over sgemm GFLOP/s measured on the same shapes in the same run. The loss
curves of `before` and `after` over the first `--curve-steps` steps (same seed, same batches) must agree.

    python -m benchmarks.sft_throughput
Results: benchmarks/results/sft_throughput.{json,md}
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks._common import DEFAULT_LOCK, LOCK_ENV, provenance, run_locked, run_record, write_result
from llm_i2i.data import long_tail_mask
from llm_i2i.data.sequences import Sequences
from llm_i2i.llm.losses import generator_loss
from llm_i2i.llm.modeling import ModelConfig, build_model
from llm_i2i.llm.scoring import decoder_of
from llm_i2i.llm.sft_config import SFTConfig
from llm_i2i.llm.sft_data import SFTExamples, collate, epoch_batches, generator_examples
from llm_i2i.llm.sft_trainer import PlainStepper, lr_at, make_objective, pad_id
from llm_i2i.llm.tokenizer import build_tokenizer

Batch = dict[str, torch.Tensor]


def sports_standin(users: int, items: int, seed: int):
    """(tokenizer, generator examples, tail mask) for synthetic Sports-shaped train histories."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(4000)])
    titles = [" ".join(rng.choice(words, 5)) for _ in range(items)]
    tokenizer = build_tokenizer(pa.table({"item_id": np.arange(items, dtype=np.int64), "title": titles}))
    lengths = 2 + rng.geometric(1 / 4.3, users)  # 5-core minus the valid/test items: >= 3, mean ~6.3
    popularity = np.arange(1, items + 1, dtype=np.float64) ** -0.9
    history = rng.choice(items, int(lengths.sum()), p=popularity / popularity.sum()).astype(np.int32)
    seqs = Sequences(np.arange(users, dtype=np.int64), np.concatenate([[0], np.cumsum(lengths)]), history,
                     np.arange(items, dtype=np.int64))
    examples = generator_examples(seqs, tokenizer, max_items=50)
    return tokenizer, examples, long_tail_mask(seqs.item_counts(), 0.2)


class Variant:
    """One way of taking a step, with its own model (same initial weights as the others)."""

    def __init__(self, name: str, step: Callable[[Batch, int], float], threads: int):
        self.name, self.step, self.threads = name, step, threads


def project_variant(name: str, cfg: SFTConfig, model, tokenizer, tail, examples, reference_loss: bool,
                    threads: int, total_steps: int) -> Variant:
    """The training loop's per-step work (collate, lr, PlainStepper.step, loss.item())."""
    prep = argparse.Namespace(tokenizer=tokenizer, tail_mask=tail)
    objective = make_objective(cfg, prep, model)
    if reference_loss:
        objective.item_loss, objective.item_block = generator_loss, None
    stepper = PlainStepper(objective, cfg, torch.device("cpu"), False)
    pid = pad_id(tokenizer)

    def step(idx, global_step: int) -> float:
        batch = collate(examples, idx, pid, "generator")
        for g in stepper.optimizer.param_groups:
            g["lr"] = lr_at(cfg, global_step, total_steps)
        return stepper.step(batch).item()

    variant = Variant(name, step, threads)
    variant.objective, variant.stepper = objective, stepper
    return variant


def plain_variant(cfg: SFTConfig, model, tokenizer, tail, examples, threads: int, total_steps: int) -> Variant:
    """A minimal PyTorch loop of the same model and loss, written the obvious way."""
    from llm_i2i.llm.tokenizer import item_vocabulary

    _, tids = item_vocabulary(tokenizer)
    item_tokens, tail_t = torch.as_tensor(tids), torch.as_tensor(tail)
    decoder = decoder_of(model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    pid = pad_id(tokenizer)

    def step(idx, global_step: int) -> float:
        b = collate(examples, idx, pid, "generator")
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, global_step, total_steps)
        h = decoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
        sel = b["labels"] >= 0
        targets = b["labels"][sel]
        logits = h[sel] @ model.get_output_embeddings().weight[item_tokens].T
        w = torch.where(tail_t[targets], cfg.alpha, cfg.beta)
        loss = (w * F.cross_entropy(logits, targets, reduction="none")).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return Variant("plain", step, threads)


def batch_shape(examples: SFTExamples, idx) -> dict[str, int]:
    lengths = examples.lengths[idx]
    targets = int(sum((examples.labels[i] >= 0).sum() for i in idx))
    return {"rows": len(idx), "width": int(lengths.max()), "tokens": int(lengths.sum()), "targets": targets}


def step_flops(shape: dict[str, int], mcfg, n_items: int) -> dict[str, float]:
    """Matmul FLOPs of one training step (forward + backward = 3x forward): item head, layer projections,
    attention scores and mixing (on the padded batch, as SDPA computes them)."""
    h, inter, layers = mcfg.hidden_size, mcfg.intermediate_size, mcfg.num_layers
    kv = h // mcfg.num_heads * (mcfg.num_kv_heads or mcfg.num_heads)
    padded = shape["rows"] * shape["width"]
    proj_params = h * h * 2 + h * kv * 2 + 3 * h * inter
    head = 3 * 2 * shape["targets"] * n_items * h
    proj = 3 * 2 * padded * proj_params * layers
    attn = 3 * 2 * 2 * shape["rows"] * shape["width"] ** 2 * h * layers
    return {"item_head": float(head), "layers": float(proj + attn)}


def sgemm_gflops(m: int, k: int, n: int, repeats: int = 5) -> float:
    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    torch.mm(a, b, out=out)
    t = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b, out=out)
    return 2 * m * k * n * repeats / (time.perf_counter() - t) / 1e9


def profile_step(variant: Variant, batches, start: int, steps: int) -> list[dict[str, Any]]:
    """Top operators by self CPU time over `steps` steps of `variant`."""
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(variant.threads)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            variant.step(batches[start + i], start + i)
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:14]
    return [{"op": e.key, "calls": e.count, "self_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
             "share": e.self_cpu_time_total / total} for e in rows]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=35_700)
    p.add_argument("--items", type=int, default=18_357)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=4, help="timed steps per variant per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--curve-steps", type=int, default=20)
    p.add_argument("--threads", default="2,1",
                   help="thread counts to time before/after at; the first (torch's default on 2 cores) is the reference")
    p.add_argument("--profile-steps", type=int, default=2)
    p.add_argument("--out", default="sft_throughput")
    args = p.parse_args(argv)
    record = run_record("sft_throughput", argv)
    thread_counts = [int(x) for x in args.threads.split(",")]
    main_threads = thread_counts[0]
    torch.set_num_threads(main_threads)
    # the step as recorded: no dropout (its random masks would make the before/after loss curves differ), the
    # learning-rate schedule of the pages in benchmarks/results
    cfg = SFTConfig(batch_size=args.batch_size, lr=3e-3, warmup_steps=30, model=ModelConfig(dropout=0.0))
    tokenizer, examples, tail = sports_standin(args.users, args.items, cfg.seed)
    batches = epoch_batches(examples.lengths, cfg.batch_size, cfg.seed, 0)
    total_steps = len(batches) * cfg.epoch_budget
    torch.manual_seed(cfg.seed)
    base = build_model(cfg.model, tokenizer)

    def fresh():
        return copy.deepcopy(base)

    variants = [project_variant(f"{name}_{t}t", cfg, fresh(), tokenizer, tail, examples, name == "before", t,
                                total_steps) for t in thread_counts for name in ("before", "after")]
    variants.append(plain_variant(cfg, fresh(), tokenizer, tail, examples, main_threads, total_steps))
    before, shipped = f"before_{main_threads}t", f"after_{main_threads}t"
    by_name = {v.name: v for v in variants}

    # 1. loss curves of the loss path before and after, same seed, same batches, from the same weights
    curves: dict[str, list[float]] = {before: [], shipped: []}
    for s in range(args.curve_steps):
        for name in curves:
            torch.set_num_threads(by_name[name].threads)
            curves[name].append(by_name[name].step(batches[s], s))
    curve_diff = float(np.max(np.abs(np.array(curves[shipped]) - curves[before]) / np.abs(curves[before])))

    # 2. where the time goes (before and after); these steps also warm up the variants the curves left out
    start = args.curve_steps
    profiles = {v.name: profile_step(v, batches, start, args.profile_steps) for v in variants if v.name != "plain"}
    torch.set_num_threads(main_threads)
    for i in range(args.profile_steps):
        by_name["plain"].step(batches[start + i], start + i)
    start += args.profile_steps

    # 3. throughput, interleaved rounds over the same batches; 4. the floor, measured between rounds
    timing: dict[str, list[float]] = {v.name: [] for v in variants}
    shapes = [batch_shape(examples, batches[start + i]) for i in range(args.steps)]
    gemm: dict[str, list[float]] = {"item_head": [], "layers": []}
    mean_targets = int(np.mean([s["targets"] for s in shapes]))
    mean_padded = int(np.mean([s["rows"] * s["width"] for s in shapes]))
    for r in range(args.rounds):
        for v in variants:
            torch.set_num_threads(v.threads)
            t = time.perf_counter()
            for i in range(args.steps):
                v.step(batches[start + i], start + i)
            timing[v.name].append(time.perf_counter() - t)
        for t in thread_counts:  # the machine's best, whatever the thread count
            torch.set_num_threads(t)
            gemm["item_head"].append(sgemm_gflops(mean_targets, cfg.model.hidden_size, args.items))
            gemm["layers"].append(sgemm_gflops(mean_padded, cfg.model.hidden_size, cfg.model.intermediate_size))
    tokens = sum(s["tokens"] for s in shapes)
    targets = sum(s["targets"] for s in shapes)
    flops = {k: sum(step_flops(s, cfg.model, args.items)[k] for s in shapes) for k in ("item_head", "layers")}
    gflops = {k: float(np.max(v)) for k, v in gemm.items()}
    floor_s = sum(flops[k] / (gflops[k] * 1e9) for k in flops)
    results = {}
    for name, secs in timing.items():
        best = float(np.min(secs))
        results[name] = {"seconds_per_step": best / args.steps, "seconds_rounds": secs,
                         "tokens_per_s": tokens / best, "targets_per_s": targets / best,
                         "effective_gflops": sum(flops.values()) / best / 1e9, "share_of_floor": floor_s / best}
    record.update({
        "config": {**vars(args), "batch_size": cfg.batch_size, "model": vars(cfg.model), "alpha": cfg.alpha,
                   "beta": cfg.beta},
        "standin": {"examples": len(examples), "targets": int(examples.report["targets"]),
                    "steps_per_epoch": len(batches), "vocab": len(tokenizer)},
        "timed_batches": shapes, "flops_per_step": {k: v / args.steps for k, v in flops.items()},
        "sgemm_gflops_rounds": gemm, "sgemm_gflops": gflops, "floor_seconds_per_step": floor_s / args.steps,
        "variants": results, "reference": before, "shipped": shipped,
        "speedup_after_vs_before": results[before]["seconds_per_step"] / results[shipped]["seconds_per_step"],
        "speedup_vs_before_by_threads": {t: results[f"before_{t}t"]["seconds_per_step"] / results[f"after_{t}t"]["seconds_per_step"] for t in thread_counts},
        "speedup_best_after_vs_before": results[before]["seconds_per_step"] / min(results[f"after_{t}t"]["seconds_per_step"] for t in thread_counts),
        "speedup_after_vs_plain": results["plain"]["seconds_per_step"] / results[shipped]["seconds_per_step"],
        "loss_curves": curves, "loss_curve_max_rel_diff": curve_diff,
        "profiles": profiles, "load_average_during": list(os.getloadavg()),
        "heavy_lock_file": os.environ.get(LOCK_ENV, DEFAULT_LOCK),
    })
    write_result(args.out, record, render(record))
    print(render(record))
    return 0


def render(rec: dict[str, Any]) -> str:
    c, res = rec["config"], rec["variants"]
    f = rec["flops_per_step"]
    lines = [
        "# Generator SFT throughput (Sports-sized stand-in)", "", provenance(rec), "",
        f"Stand-in: {c['users']:,} users, {c['items']:,} items, {rec['standin']['targets']:,} train targets, "
        f"{rec['standin']['steps_per_epoch']} steps/epoch at batch {c['batch_size']}; scratch model hidden "
        f"{c['model']['hidden_size']}, {c['model']['num_layers']} layers, vocabulary {rec['standin']['vocab']:,}; "
        f"alpha={c['alpha']}, beta={c['beta']}. Timed: {c['steps']} steps x {c['rounds']} interleaved rounds "
        f"(best round), mean {np.mean([s['targets'] for s in rec['timed_batches']]):.0f} target positions and "
        f"{np.mean([s['tokens'] for s in rec['timed_batches']]):.0f} tokens per step. 1-min load average at "
        f"start {rec['load_average_at_start'][0]:.1f}, after timing {rec['load_average_during'][0]:.1f} "
        f"(2 cores, shared machine); heavy-work lock file `{rec['heavy_lock_file']}`.", "",
        f"Floor: {f['item_head'] / 1e9:.1f} GFLOP item head + {f['layers'] / 1e9:.1f} GFLOP layers per step, at "
        f"sgemm {rec['sgemm_gflops']['item_head']:.1f} / {rec['sgemm_gflops']['layers']:.1f} GFLOP/s (best over "
        f"rounds and thread counts, measured on those shapes between the timed rounds) = "
        f"{rec['floor_seconds_per_step'] * 1e3:.0f} ms/step.", "",
        "| variant | threads | ms/step | tokens/s | targets/s | GFLOP/s | % of floor |", "|---|---|---|---|---|---|---|",
    ]
    for name, r in res.items():
        t = name.split("_")[-1].rstrip("t") if name != "plain" else c["threads"].split(",")[0]
        lines.append(f"| {name} | {t} | {r['seconds_per_step'] * 1e3:.0f} | {r['tokens_per_s']:,.0f} | "
                     f"{r['targets_per_s']:,.0f} | {r['effective_gflops']:.1f} | {100 * r['share_of_floor']:.0f}% |")
    by_threads = ", ".join(f"{x:.2f}x at {t} thread(s)" for t, x in rec["speedup_vs_before_by_threads"].items())
    curve = rec["loss_curves"][rec["reference"]]
    lines += ["", f"Chunked loss path vs before, same threads: {by_threads}. Best `after` vs `{rec['reference']}` "
              f"(today's default threads): **{rec['speedup_best_after_vs_before']:.2f}x**. `{rec['shipped']}` vs the "
              f"minimal PyTorch loop: {rec['speedup_after_vs_plain']:.2f}x.", "",
              f"Loss curve, first {c['curve_steps']} steps from the same weights on the same batches: max relative "
              f"difference `{rec['shipped']}` vs `{rec['reference']}` {rec['loss_curve_max_rel_diff']:.1e} "
              f"(step 1 loss {curve[0]:.4f}, step {c['curve_steps']} {curve[-1]:.4f}).", ""]
    for name, rows in rec["profiles"].items():
        lines += [f"Where the time goes, `{name}` (torch profiler, self CPU time per step):", "",
                  "| op | calls/step | ms/step | share |", "|---|---|---|---|"]
        steps = c["profile_steps"]
        lines += [f"| `{r['op']}` | {r['calls'] / steps:.0f} | {r['self_ms_per_step']:.1f} | {100 * r['share']:.0f}% |"
                  for r in rows]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(run_locked(main))
