"""SFT of the generator / discriminator on Ray Train (`TorchTrainer`) with DeepSpeed ZeRO.

Every worker rebuilds the same examples from the dataset dir (deterministic), takes every world-th batch
(`epoch_batches(rank, world)`), and steps a DeepSpeed engine around the shared `SFTObjective` - with a torch
AdamW handed to `deepspeed.initialize` (a DeepSpeed `optimizer` block would compile fused_adam). On GPU:
NCCL, bf16, FlashAttention-2 (via ModelConfig.attn_implementation='auto'); on CPU: the same DeepSpeed path
over gloo. Loss and tokens/s are reported to Ray Train every `checkpoint_every` steps; at each epoch end rank 0
writes a Ray Train checkpoint (weights as safetensors + state.json with the validation metric). A re-run
with the same out dir resumes from the latest such checkpoint (epoch granularity; the optimizer moments
restart; the checkpoints live on the driver's local disk, so a multi-node cluster needs a shared storage path) and the driver returns the weights of the best epoch. `stop_after_steps` stops at the first epoch
boundary past that many steps (to time-box a run, and to test resuming).

    python -m ray_jobs.train_llm --role generator --data DATASET_DIR --out CKPT_DIR --set num_workers=2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _state_of(ckpt_dir: Path) -> dict[str, Any]:
    return json.loads((ckpt_dir / "state.json").read_text())


def save_weights(model, path: str | Path) -> None:
    """Weights as safetensors; copies the tensors because DeepSpeed ZeRO keeps them as views of flat buffers."""
    from safetensors.torch import save_file

    tied = model.config.tie_word_embeddings
    save_file({k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()
               if not (tied and k == "lm_head.weight")}, str(path))


def load_weights(model, path: str | Path) -> None:
    from safetensors.torch import load_file

    missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise ValueError(f"{path}: weights do not fit the model (missing {missing}, unexpected {unexpected})")
    model.tie_weights()


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import deepspeed
    import numpy as np
    import ray.train
    import ray.train.torch
    import torch
    from transformers import AutoTokenizer

    from llm_i2i.config import from_dict
    from llm_i2i.llm.modeling import build_model
    from llm_i2i.llm.sft import SFTConfig, lr_at, make_objective, pad_id, prepare_sft, select_metric
    from llm_i2i.llm.sft_data import collate, epoch_batches

    cfg = from_dict(SFTConfig, config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // world) if not torch.cuda.is_available() else 4)
    tok = AutoTokenizer.from_pretrained(config["tokenizer_dir"], local_files_only=True)
    prep = prepare_sft(cfg, Path(config["dataset_dir"]), tok)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, tok, prep.items)
    start_epoch, history = 0, []
    ckpt = ray.train.get_checkpoint()  # set when Ray Train restarts failed workers within this run
    if ckpt is None and config.get("resume_from"):
        ckpt = ray.train.Checkpoint.from_directory(config["resume_from"])  # a previous, interrupted run
    if ckpt is not None:
        with ckpt.as_directory() as d:
            load_weights(model, os.path.join(d, "model.safetensors"))
            state = _state_of(Path(d))
            start_epoch, history = state["epoch"], state["history"]
    objective = make_objective(cfg, prep, model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    micro = max(1, cfg.batch_size // world)
    lengths = prep.examples.lengths
    steps_per_epoch = len(epoch_batches(lengths, micro, cfg.seed, 0, rank, world))
    total = steps_per_epoch * cfg.epochs
    if cfg.use_deepspeed:
        ds_config = {
            "train_micro_batch_size_per_gpu": micro,
            "gradient_accumulation_steps": 1,
            "gradient_clipping": 1.0,
            "zero_optimization": {"stage": cfg.zero_stage},
            "bf16": {"enabled": cfg.bf16},
            "steps_per_print": 10**9,
        }
        engine, opt, _, _ = deepspeed.initialize(model=objective, optimizer=opt, config=ds_config)
        device = engine.device
    else:
        engine = ray.train.torch.prepare_model(objective)
        device = ray.train.torch.get_device()
    pid = pad_id(tok)
    first_step = step = start_epoch * steps_per_epoch
    tokens, t0 = 0, time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        loss_sum, n = 0.0, 0
        for i, idx in enumerate(epoch_batches(lengths, micro, cfg.seed, epoch, rank, world)):
            batch = {k: v.to(device) for k, v in collate(prep.examples, idx, pid, cfg.role).items()}
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step, total)
            loss = engine(**batch)
            if cfg.use_deepspeed:
                engine.backward(loss)
                engine.step()
            else:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(engine.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
            step += 1
            tokens += int(batch["attention_mask"].sum())
            loss_sum, n = loss_sum + loss.item(), n + 1
            if step % cfg.checkpoint_every == 0:
                elapsed = time.perf_counter() - t0
                ray.train.report({"epoch": epoch, "step": step, "loss": loss.item(),
                                  "tokens_per_s_per_worker": tokens / elapsed})
        elapsed = time.perf_counter() - t0
        metrics: dict[str, Any] = {"epoch": epoch + 1, "step": step, "train_loss": loss_sum / max(n, 1),
                                   "tokens_per_s_per_worker": tokens / elapsed, "train_seconds": elapsed,
                                   "world_size": world}
        if rank == 0:
            name, value = select_metric(cfg, model, prep, cfg.eval_users or None)
            metrics[f"valid_{name}"] = value
            metrics["valid_metric"] = value
            history.append(metrics)
            with tempfile.TemporaryDirectory() as d:
                save_weights(model, os.path.join(d, "model.safetensors"))  # ZeRO <= 2: full weights on every rank
                Path(d, "state.json").write_text(json.dumps({"epoch": epoch + 1, "history": history,
                                                             "run_hash": config["run_hash"]}))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics)
        if cfg.stop_after_steps is not None and step - first_step >= cfg.stop_after_steps:
            return  # every rank counts the same steps, so all stop at this epoch boundary


def _checkpoints(storage: Path, run_hash: str) -> list[Path]:
    found = [p.parent for p in storage.rglob("checkpoint_*/state.json")]
    return [p for p in found if _state_of(p).get("run_hash") == run_hash]


BUILD_LOCK_IDLE_SECONDS = 600.0


def clear_stale_build_locks(ext_dir: str | Path, idle_seconds: float = BUILD_LOCK_IDLE_SECONDS) -> list[Path]:
    """Remove torch-extension build locks (DeepSpeed's JIT ops) left by a killed build.

    torch's FileBaton waits forever while `<op>/lock` exists, so one interrupted compile would hang every later
    DeepSpeed run. A lock counts as stale when nothing in its op directory changed for `idle_seconds`.
    """
    removed = []
    for lock in Path(ext_dir).glob("*/lock"):
        last_activity = max(f.stat().st_mtime for f in lock.parent.iterdir())
        if time.time() - last_activity > idle_seconds:
            lock.unlink(missing_ok=True)
            removed.append(lock)
    return removed


def train_with_ray(cfg, dataset_dir: Path, out_dir: Path, tokenizer_dir: Path):
    """Run the SFT on Ray Train; (model with the best epoch's weights, training info), or None if stopped early."""
    import ray
    import torch
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from transformers import AutoTokenizer

    from llm_i2i.config import to_dict
    from llm_i2i.data import load_dataset
    from llm_i2i.llm.modeling import build_model
    from llm_i2i.progress import log

    gpu = torch.cuda.is_available()
    ext_dir = os.environ.get("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    for lock in clear_stale_build_locks(ext_dir):
        log.warning(f"removed stale build lock {lock} (no build activity for {BUILD_LOCK_IDLE_SECONDS:.0f} s; "
                    "a killed compile left it)")
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS", "local")
        kw = dict(num_cpus=max(2, os.cpu_count() or 2)) if address == "local" else {}
        ray.init(address=address, include_dashboard=False, **kw,
                 runtime_env={"env_vars": {"TORCH_EXTENSIONS_DIR": ext_dir, "PYTHONPATH": str(REPO)}})
    storage = (out_dir.parent / f".{out_dir.name}.resume" / "ray").resolve()
    run_hash = cfg.run_hash()
    previous = sorted(_checkpoints(storage, run_hash), key=lambda p: _state_of(p)["epoch"])
    resume = str(previous[-1]) if previous else None
    if resume is not None:
        log.info(f"resuming Ray SFT from {previous[-1]} (epoch {_state_of(previous[-1])['epoch']})")
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": to_dict(cfg), "dataset_dir": str(Path(dataset_dir).resolve()),
                           "tokenizer_dir": str(Path(tokenizer_dir).resolve()), "run_hash": run_hash,
                           "resume_from": resume},
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=gpu,
                                     resources_per_worker=None if gpu else {"CPU": 0.5}),
        run_config=RunConfig(name=f"sft_{len(previous)}", storage_path=str(storage),
                             checkpoint_config=CheckpointConfig(num_to_keep=None), failure_config=FailureConfig(max_failures=1)),
    )
    t0 = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - t0
    done = [p for p in _checkpoints(storage, run_hash)]
    if not done:
        raise RuntimeError(f"Ray SFT produced no checkpoint under {storage}")
    last = max(done, key=lambda p: _state_of(p)["epoch"])
    if _state_of(last)["epoch"] < cfg.epochs:
        log.info(f"Ray SFT stopped at epoch {_state_of(last)['epoch']}/{cfg.epochs} as asked; run again to resume")
        return None
    best = max(done, key=lambda p: (_state_of(p)["history"][-1]["valid_metric"], -_state_of(p)["epoch"]))
    history = _state_of(last)["history"]
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    model = build_model(cfg.model, tok, load_dataset(dataset_dir).items)
    load_weights(model, best / "model.safetensors")
    info = {"history": history, "best_epoch": _state_of(best)["epoch"], "ray_fit_seconds": seconds,
            "resumed_from_epoch": _state_of(previous[-1])["epoch"] if previous else 0,
            "num_workers": cfg.num_workers, "deepspeed": cfg.use_deepspeed, "zero_stage": cfg.zero_stage,
            "tokens_per_s": history[-1]["tokens_per_s_per_worker"] * cfg.num_workers}  # rank 0's rate x workers
    return model, info


def main(argv: list[str] | None = None) -> int:
    from llm_i2i.config import load_config
    from llm_i2i.llm.sft import SFTConfig, run_sft
    from llm_i2i.progress import setup_logging

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--role", choices=["generator", "discriminator"], default="generator")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--config")
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args(argv)
    setup_logging()
    cfg = load_config(SFTConfig, args.config, [f"role={args.role}", "use_ray=true", *args.set])
    run_sft(cfg, Path(args.data), Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
