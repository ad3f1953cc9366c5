"""The Ray runner of the SFT: the library's step loop (`llm_i2i.llm.sft_trainer.train_worker`) on Ray Train
workers (`TorchTrainer`), with DeepSpeed ZeRO when `use_deepspeed`.

Workers request GPUs from the configuration (`use_gpu`), by default when the cluster declares at least one GPU
per worker (`ray.cluster_resources()`), never from the driver's CUDA: under `ray job submit` the driver often
sits on a head without GPUs. NCCL is used when a task holding a GPU finds CUDA and NCCL there; otherwise the
process group runs over gloo and each worker, given a GPU that CUDA cannot use, trains on CPU and logs it.
Resume state, the final metrics and the checkpoint are written by the workers; the driver never loads the model. A killed worker is restarted by Ray Train
(`max_failures`) and continues from the newest committed resume state.

    python -m ray_jobs.train_llm --role generator --data DATASET_DIR --out CKPT_DIR --set num_workers=2
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

REPO = Path(__file__).resolve().parents[1]
MAX_FAILURES = 2  # worker-group restarts per fit (a killed worker, a lost node) before the run fails
T = TypeVar("T")


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray
    import ray.train
    import torch

    from llm_i2i.llm.sft_trainer import train_worker
    from llm_i2i.pipeline.artifacts import materialize

    job = materialize(config["job"])  # paths into a URI root's artifacts: this node's own copies
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    # what Ray gave rank 0, recorded in the checkpoint manifest (whether CUDA could use it is `training.device`)
    job.manifest["ray_rank0"] = {"gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                                 "node_id": ray.get_runtime_context().get_node_id()}
    if not job.config.get("threads"):
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // world))
    train_worker(job, rank, world, report=ray.train.report)


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


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def gpu_workers_have_nccl() -> bool:
    """Whether a process holding one of the cluster's GPUs can use it through CUDA and NCCL: asked of a task
    on a GPU node, never of the driver. False where GPUs are only declared (`ray start --num-gpus` on a CPU box)."""
    import ray

    def probe() -> bool:
        import torch
        import torch.distributed as dist

        return torch.cuda.is_available() and dist.is_nccl_available()

    return bool(ray.get(ray.remote(num_gpus=1, num_cpus=0)(probe).remote()))


def worker_cpus(cpus_per_worker: float | None, num_workers: int, use_gpu: bool) -> float:
    """CPUs each SFT worker reserves: `sft.cpus_per_worker` when set; else half a CPU beside a GPU (it only feeds
    the GPU), and on CPU an equal share of the cluster's free CPUs, whole ones. Ray starts a worker with as many
    torch threads as whole CPUs it reserved, so the former fixed half CPU trained the CPU pipeline on 1 thread of
    2 idle cores, about half the speed of 2 (benchmarks/results/sft_worker_cpus.md). Free CPUs spread thinly
    over many nodes may not fit a share: set `cpus_per_worker` there."""
    import ray

    if cpus_per_worker is not None:
        return cpus_per_worker
    if use_gpu:
        return 0.5
    share = int(ray.available_resources().get("CPU", 0.0) // num_workers)
    return float(share) if share >= 1 else 0.5


class RaySFTRunner:
    """`llm_i2i.llm.sft.SFTRunner` on a Ray cluster (the running one, RAY_ADDRESS, or a local one)."""

    def __init__(self, eval_cpus: float = 1.0):
        self.eval_cpus = eval_cpus

    def _ensure_ray(self) -> str:
        from llm_i2i.progress import log
        from llm_i2i.raycluster import init_ray

        ext_dir = os.environ.get("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
        for lock in clear_stale_build_locks(ext_dir):
            log.warning(f"removed stale build lock {lock} (no build activity for {BUILD_LOCK_IDLE_SECONDS:.0f} s; "
                        "a killed compile left it)")
        init_ray(runtime_env={"env_vars": {"TORCH_EXTENSIONS_DIR": ext_dir, "PYTHONPATH": str(REPO)}})
        return ext_dir

    def train(self, job, cfg) -> None:
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        from llm_i2i.pipeline.artifacts import portable
        from llm_i2i.progress import log
        from llm_i2i.uri import uri_join

        self._ensure_ray()
        gpus = cluster_gpus()
        use_gpu = job.use_gpu if job.use_gpu is not None else gpus >= cfg.num_workers
        if use_gpu and gpus < cfg.num_workers:
            raise ValueError(f"sft.use_gpu=true with {cfg.num_workers} workers, but the cluster declares {gpus:g} GPUs")
        cpus = worker_cpus(cfg.cpus_per_worker, cfg.num_workers, use_gpu)
        log.info(f"Ray SFT: {cfg.num_workers} workers, {'1 GPU' if use_gpu else 'no GPU'} + {cpus:g} CPU "
                 f"each (cluster GPUs: {gpus:g})")
        job = dataclasses.replace(job, use_gpu=use_gpu)
        nccl = use_gpu and gpu_workers_have_nccl()
        if use_gpu and not nccl:
            log.warning("the cluster's GPU workers cannot use CUDA/NCCL: the process group runs over gloo and each "
                        "worker falls back to CPU")
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"job": portable(job)},
            torch_config=TorchConfig(backend="nccl" if nccl else "gloo"),
            scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=use_gpu,
                                         resources_per_worker={"CPU": cpus}),
            run_config=RunConfig(name=f"sft_{job.run_key}_{time.time_ns()}",
                                 storage_path=uri_join(job.shared_uri, "ray") if job.shared_uri
                                 else str(Path(job.resume_dir) / "ray"),
                                 failure_config=FailureConfig(max_failures=MAX_FAILURES)),
        )
        trainer.fit()

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn` in a Ray task, on a GPU when the cluster has one: model-loading evaluation stays off the driver."""
        import ray

        from llm_i2i.pipeline.artifacts import call_materialized, portable

        self._ensure_ray()
        task = ray.remote(num_cpus=self.eval_cpus, num_gpus=1 if cluster_gpus() >= 1 else 0,
                          max_retries=1)(call_materialized)
        return ray.get(task.remote(fn, *portable(args), **portable(kwargs)))


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
    run_sft(cfg, Path(args.data), Path(args.out), RaySFTRunner())
    return 0


if __name__ == "__main__":
    sys.exit(main())
