"""The one SFT step loop, run by every training process: in-process (world 1) or as a Ray Train worker.

`train_worker(job, rank, world)` rebuilds the examples from the dataset (deterministic), takes every world-th
batch of each epoch, and steps either a plain AdamW (DDP when world > 1) or a DeepSpeed ZeRO engine around the
shared `SFTObjective`, on the device it is given. Every `checkpoint_every` steps and at each epoch end it
commits a resume state (`sft_resume.py`, one format for both paths); a restarted process, or a rerun, continues
from the newest one at the same step with the same optimizer moments. After each epoch rank 0 scores the
validation metric, keeps the best weights, and stops once `patience` epochs passed without improvement. At the
end rank 0 loads the best weights, computes the final validation metrics and writes the HF checkpoint itself:
the driver never holds the model.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from llm_i2i.config import from_dict, to_dict
from llm_i2i.llm.losses import SFTObjective
from llm_i2i.llm.modeling import MANIFEST, build_model, item_token_init, merged_weights, save_checkpoint
from llm_i2i.llm.sft_config import SFTConfig
from llm_i2i.llm.sft_data import Prepared, collate, epoch_batches, prepare_sft
from llm_i2i.llm.sft_metrics import final_metrics, select_metric
from llm_i2i.llm.sft_resume import (RemoteResumeStore, ResumeStore, SharedWork, flatten_optimizer_state, load_weights,
                                    unflatten_optimizer_state, weights_of)
from llm_i2i.llm.tokenizer import answer_token_ids, item_vocabulary
from llm_i2i.progress import Progress, log


@dataclass
class SFTJob:
    """One SFT run as plain data (it travels to Ray workers). `use_gpu` None: the runner decides."""

    config: dict[str, Any]
    dataset_dir: str
    out_dir: str
    resume_dir: str  # holds `tokenizer/` and `states/`
    run_key: str  # config + data (+ base checkpoint) content; a finished out_dir carries it in its manifest
    use_gpu: bool | None
    manifest: dict[str, Any] = field(default_factory=dict)  # extra manifest fields (fingerprints)
    shared_uri: str | None = None  # a URI the workers share instead of out_dir / resume_dir (`SharedWork`)

    @property
    def tokenizer_dir(self) -> Path:
        return Path(self.resume_dir) / "tokenizer"

    @property
    def states_dir(self) -> Path:
        return Path(self.resume_dir) / "states"


def usable_device(want_gpu: bool) -> torch.device:
    """CUDA when asked for and usable; CPU otherwise, with a warning when a GPU was given but does not work
    (e.g. a node that declares GPUs to Ray without having CUDA ones)."""
    if not want_gpu:
        return torch.device("cpu")
    try:
        if torch.cuda.is_available():
            dev = torch.device("cuda", torch.cuda.current_device())
            torch.zeros(1, device=dev).add_(1)
            return dev
        reason = "torch.cuda.is_available() is False"
    except RuntimeError as e:  # a broken driver or a device another process holds
        reason = str(e)
    log.warning(f"SFT was given a GPU but CUDA is not usable here ({reason}); training on CPU")
    return torch.device("cpu")


def training_threads(requested: int | None) -> int:
    """`requested`, or when None: the threads this process was given (torch's default: every core; a Ray
    worker: its share), fewer when other processes keep some of its cores busy now (`busy_cores_of_others`).

    Torch's OpenMP threads meet at a barrier in every parallel op; with more runnable threads than cores one of
    them is often descheduled and the others wait, so on a shared machine 2 threads ran a step several times
    slower than 1 (benchmarks/results/sft_throughput.md)."""
    if requested:
        return requested
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    return max(1, min(torch.get_num_threads(), len(cores), int(len(cores) - busy_cores_of_others(cores) + 0.5)))


def busy_cores_of_others(cores: list[int], window_s: float = 0.5, windows: int = 3) -> float:
    """How many of `cores` other processes keep busy: their busy time in /proc/stat minus this process's own CPU
    time, over each of `windows` consecutive `window_s` windows, the least of them. The least, because a Ray Train
    worker starts beside a second or so of its controller's set-up (about 1 core of 2), which is gone before
    the first step; sustained load shows in every window. Not the load average: that decays over a minute and
    counts this process, so an SFT started right after another in the same process (a benchmark's next variant)
    took 1 thread of an otherwise idle 2-core machine. Without /proc, the 1-minute load average."""
    def sample() -> tuple[int, int, int]:
        busy = total = 0
        with open("/proc/stat") as f:
            for line in f:
                name, *ticks = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
                    t = [int(x) for x in ticks]
                    busy, total = busy + sum(t) - t[3] - t[4], total + sum(t)  # all but idle and iowait
        with open("/proc/self/stat") as f:
            own = sum(int(x) for x in f.read().rsplit(")", 1)[1].split()[11:13])  # utime + stime
        return busy, total, own

    try:
        samples = [sample()]
        for _ in range(max(windows, 1)):
            time.sleep(window_s)
            samples.append(sample())
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0]
    return min(len(cores) * max(b1 - b0 - (s1 - s0), 0) / max(t1 - t0, 1)
               for (b0, t0, s0), (b1, t1, s1) in zip(samples, samples[1:]))


def lr_at(cfg: SFTConfig, step: int, total: int) -> float:
    """Linear warm-up, then linear decay to lr * min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(total - cfg.warmup_steps, 1)
    return cfg.lr * (1 - (1 - cfg.min_lr_ratio) * min(frac, 1.0))


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def make_objective(cfg: SFTConfig, prep: Prepared, model) -> SFTObjective:
    _, tids = item_vocabulary(prep.tokenizer)
    answers = answer_token_ids(prep.tokenizer) if cfg.role == "discriminator" else None
    return SFTObjective(model, cfg.role, tids, prep.tail_mask, cfg.alpha, cfg.beta, answers)


def trainable(objective: SFTObjective) -> list[torch.nn.Parameter]:
    """The parameters the optimizer updates: all of them, or only the adapters under LoRA."""
    return [p for p in objective.parameters() if p.requires_grad]


class PlainStepper:
    """AdamW with gradient clipping; DistributedDataParallel when several processes train together."""

    def __init__(self, objective: SFTObjective, cfg: SFTConfig, device: torch.device, distributed: bool):
        self.params = trainable(objective)
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.module = objective
        if distributed:
            self.module = torch.nn.parallel.DistributedDataParallel(
                objective, device_ids=[device.index] if device.type == "cuda" else None)
        self.device = device

    def step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = self.module(**batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss

    def optimizer_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return flatten_optimizer_state(self.optimizer.state_dict()["state"])

    def load_optimizer_state(self, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
        sd = self.optimizer.state_dict()
        sd["state"] = unflatten_optimizer_state(tensors, scalars)
        self.optimizer.load_state_dict(sd)


class DeepSpeedStepper:
    """A DeepSpeed ZeRO (stage 0-2) engine around the objective, with a torch AdamW handed to it (a DeepSpeed
    `optimizer` block would compile fused_adam). Its resume state is the base optimizer's moments over this
    rank's fp32 master partition, plus that partition."""

    def __init__(self, objective: SFTObjective, cfg: SFTConfig, micro_batch: int, dtype: torch.dtype):
        import deepspeed

        opt = torch.optim.AdamW(trainable(objective), lr=cfg.lr, weight_decay=cfg.weight_decay)
        ds_config = {
            "train_micro_batch_size_per_gpu": micro_batch,
            "gradient_accumulation_steps": 1,
            "gradient_clipping": 1.0,
            "zero_optimization": {"stage": cfg.zero_stage},
            "bf16": {"enabled": dtype == torch.bfloat16},
            "fp16": {"enabled": dtype == torch.float16},
            "steps_per_print": 10**9,
        }
        self.module, self.optimizer, _, _ = deepspeed.initialize(model=objective, optimizer=opt, config=ds_config)
        self.device = self.module.device

    def step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = self.module(**batch)
        self.module.backward(loss)
        self.module.step()
        return loss

    def _parts(self) -> tuple[torch.optim.Optimizer, list[torch.Tensor]]:
        opt = self.optimizer
        if hasattr(opt, "single_partition_of_fp32_groups"):  # ZeRO 1/2
            return opt.optimizer, opt.single_partition_of_fp32_groups
        if isinstance(opt, torch.optim.Optimizer):  # stage 0 in fp32: the client optimizer itself
            return opt, []
        raise NotImplementedError(f"no resume format for DeepSpeed optimizer {type(opt).__name__}; use zero_stage 1 or 2")

    def optimizer_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        base, masters = self._parts()
        tensors, scalars = flatten_optimizer_state(base.state_dict()["state"])
        tensors.update({f"master.{i}": m.detach().cpu().contiguous() for i, m in enumerate(masters)})
        return tensors, scalars

    def load_optimizer_state(self, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
        base, masters = self._parts()
        for i, m in enumerate(masters):
            m.data.copy_(tensors.pop(f"master.{i}"))
        sd = base.state_dict()
        sd["state"] = unflatten_optimizer_state(tensors, scalars)
        base.load_state_dict(sd)


def _collective(world: int):
    """(barrier, broadcast-a-float-from-rank-0) over torch.distributed, or no-ops for a single process."""
    import torch.distributed as dist

    if world == 1 or not dist.is_initialized():
        return (lambda: None), (lambda value, device: value)

    def broadcast(value: float, device: torch.device) -> float:
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.broadcast(t, src=0)
        return float(t.item())

    return dist.barrier, broadcast


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False, local_files_only=True)
    tok.padding_side = "right"
    return tok


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of one optimizer step on one worker (distinct per step and rank, same on every rerun)."""
    return (seed * 1_000_003 + step) * 1_009 + rank


def train_worker(job: SFTJob, rank: int = 0, world: int = 1,
                 report: Callable[[dict[str, Any]], None] | None = None) -> bool:
    """Train (or resume) `job` as rank `rank` of `world`; True when the run finished and rank 0 wrote the
    checkpoint, False when `stop_after_steps` stopped it (its resume state committed)."""
    cfg = from_dict(SFTConfig, job.config)
    torch.set_num_threads(training_threads(cfg.threads))
    log.info(f"{cfg.role} SFT rank {rank}: {torch.get_num_threads()} torch thread(s)")
    barrier, broadcast = _collective(world)
    shared = SharedWork(job.shared_uri) if job.shared_uri else None
    if shared:  # this node's scratch: the tokenizer fetched, the checkpoint built here then uploaded
        local = shared.local_dir()
        job = replace(job, out_dir=str(local / "model"), resume_dir=str(local))
    device = usable_device(bool(job.use_gpu))
    prep = prepare_sft(cfg, job.dataset_dir, load_tokenizer(job.tokenizer_dir))
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, prep.tokenizer, prep.items, device)
    dtype = next(model.parameters()).dtype
    objective = make_objective(cfg, prep, model).to(device)
    if shared:  # per rank: ranks of one node download different optimizer files
        store = RemoteResumeStore(shared.states_uri, job.states_dir / f"rank{rank}", job.run_key, rank, world, barrier)
    else:
        store = ResumeStore(job.states_dir, job.run_key, rank, world, barrier)
    resumed = store.load(str(dtype))
    if resumed is not None:
        load_weights(model, resumed.model, str(resumed.path))
    micro = max(1, cfg.batch_size // world)
    if cfg.distributed and cfg.use_deepspeed:
        stepper = DeepSpeedStepper(objective, cfg, micro, dtype)
    else:
        stepper = PlainStepper(objective, cfg, device, world > 1)
    best = None
    if resumed is not None:
        stepper.load_optimizer_state(*resumed.optimizer)
        state, best = resumed.state, resumed.best
        log.info(f"resuming {cfg.role} SFT at epoch {state['epoch'] + 1} step {state['step_in_epoch']} ({resumed.path})")
    else:
        state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_metric": None, "best_epoch": 0,
                 "epochs_without_improvement": 0, "stopped_early": False, "history": [], "train_seconds": 0.0,
                 "tokens": 0, "loss_sum": 0.0, "loss_count": 0, "dtype": str(dtype), "resumed_at_steps": []}
    if resumed is not None:
        state["resumed_at_steps"].append(state["global_step"])
    lengths = prep.examples.lengths
    steps_per_epoch = len(epoch_batches(lengths, micro, cfg.seed, 0, rank, world))
    total = steps_per_epoch * cfg.epoch_budget
    pid = pad_id(prep.tokenizer)
    done_here = 0

    def commit(best_changed: bool = False) -> None:
        store.commit(state, weights_of(model) if rank == 0 else None, stepper.optimizer_state(),
                     best if rank == 0 else None, best_changed)

    while state["epoch"] < cfg.epoch_budget and not state["stopped_early"]:
        epoch = state["epoch"]
        batches = epoch_batches(lengths, micro, cfg.seed, epoch, rank, world)
        prog = Progress(len(batches), f"{cfg.role} SFT epoch {epoch + 1}/{cfg.epoch_budget}", unit="step")
        prog.done = state["step_in_epoch"]
        objective.train()
        t0 = time.perf_counter()
        for idx in batches[state["step_in_epoch"]:]:
            batch = {k: v.to(stepper.device) for k, v in collate(prep.examples, idx, pid, cfg.role).items()}
            for g in stepper.optimizer.param_groups:
                g["lr"] = lr_at(cfg, state["global_step"], total)
            # dropout masks are a function of (seed, step, rank) alone, so a run resumed at any step, on any node,
            # draws the masks the uninterrupted run drew
            torch.manual_seed(step_seed(cfg.seed, state["global_step"], rank))
            loss = stepper.step(batch).item()
            state["global_step"] += 1
            state["step_in_epoch"] += 1
            state["tokens"] += int(batch["attention_mask"].sum())
            state["loss_sum"] += loss
            state["loss_count"] += 1
            done_here += 1
            seconds = state["train_seconds"] + time.perf_counter() - t0
            prog.update(1, loss=loss, tokens_per_s=state["tokens"] / max(seconds, 1e-9))
            stop = cfg.stop_after_steps is not None and done_here >= cfg.stop_after_steps
            if stop or state["global_step"] % cfg.checkpoint_every == 0:
                state["train_seconds"], t0 = seconds, time.perf_counter()
                commit()
                if report:
                    report({"epoch": epoch, "step": state["global_step"], "loss": loss,
                            "tokens_per_s_per_worker": state["tokens"] / max(seconds, 1e-9)})
            if stop:
                log.info(f"stopping after {done_here} steps as asked; resume state in {job.states_dir}")
                return False
        state["train_seconds"] += time.perf_counter() - t0
        name, value = select_metric(cfg, model, prep, cfg.selection_users) if rank == 0 else ("", 0.0)
        value = broadcast(value, stepper.device)
        improved = state["best_metric"] is None or value > state["best_metric"]
        if improved:
            state["best_metric"], state["best_epoch"], state["epochs_without_improvement"] = value, epoch + 1, 0
            best = weights_of(model) if rank == 0 else None
        else:
            state["epochs_without_improvement"] += 1
        metrics = {"epoch": epoch + 1, "step": state["global_step"],
                   "train_loss": state["loss_sum"] / max(state["loss_count"], 1), "valid_metric": value,
                   "tokens_per_s_per_worker": state["tokens"] / max(state["train_seconds"], 1e-9),
                   "train_seconds": state["train_seconds"], "world_size": world}
        if rank == 0:
            metrics[f"valid_{name}"] = value
            log.info(f"epoch {epoch + 1}: train loss {metrics['train_loss']:.4f}, valid {name} {value:.4f}")
        state["history"].append(metrics)
        state["epoch"], state["step_in_epoch"], state["loss_sum"], state["loss_count"] = epoch + 1, 0, 0.0, 0
        patience = cfg.early_stop_patience
        if patience and state["epochs_without_improvement"] >= patience and state["epoch"] < cfg.epoch_budget:
            state["stopped_early"] = True
            log.info(f"early stop after epoch {epoch + 1}: no better valid metric for {patience} epochs "
                     f"(best epoch {state['best_epoch']})")
        commit(best_changed=improved)
        if report:
            report(metrics)
    if rank == 0:
        _write_checkpoint(job, cfg, prep, model, best, state, world)
        if shared:  # the URI holds it now; a large model is not kept twice on this node
            shared.upload_model(Path(job.out_dir), MANIFEST)
            shutil.rmtree(job.out_dir)
    barrier()
    return True


def _write_checkpoint(job: SFTJob, cfg: SFTConfig, prep: Prepared, model, best, state: dict[str, Any],
                      world: int) -> None:
    """Best weights, final validation metrics and the HF checkpoint, in the training process."""
    if best is not None:
        load_weights(model, best, "best weights")
    model.eval()
    t0 = time.perf_counter()
    metrics = final_metrics(cfg, model, prep)
    training = {k: state[k] for k in ("history", "best_epoch", "best_metric", "stopped_early", "train_seconds",
                                      "tokens", "global_step", "resumed_at_steps", "dtype")}
    training.update({"tokens_per_s": state["tokens"] * world / max(state["train_seconds"], 1e-9),
                     "num_workers": world, "threads": torch.get_num_threads(),
                     "deepspeed": cfg.distributed and cfg.use_deepspeed,
                     "zero_stage": cfg.zero_stage, "gpu_requested": bool(job.use_gpu),
                     "device": str(next(model.parameters()).device),
                     "final_metrics_seconds": time.perf_counter() - t0})
    manifest = {"role": cfg.role, "run_key": job.run_key, "config_hash": cfg.run_hash(), "sft_config": to_dict(cfg),
                "item_tokens": item_token_init(cfg.model, prep.tokenizer), "dataset_dir": job.dataset_dir, **job.manifest, "examples": prep.examples.report,
                "training": training, "metrics": metrics}
    save_checkpoint(model, prep.tokenizer, job.out_dir, manifest, state_dict=merged_weights(model, weights_of(model)))
    log.info(f"{cfg.role} checkpoint: {job.out_dir} metrics {json.dumps(metrics)[:300]}")
