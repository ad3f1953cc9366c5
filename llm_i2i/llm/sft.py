"""Supervised fine-tuning of the generator / discriminator on the TRAIN split: the entry point.

`run_sft(cfg, dataset_dir, out_dir, runner)` keys the run by its config and the content of its data (and of a
local base checkpoint), builds the tokenizer once into the run's resume directory, and hands an `SFTJob` to a
runner: `LocalRunner` trains in this process; `ray_jobs.train_llm.RaySFTRunner` runs the same loop
(`sft_trainer.train_worker`) on Ray Train workers with DeepSpeed. The library never imports Ray: whoever
needs the cluster (the command line, the Ray jobs) passes the Ray runner. A finished `out_dir` whose manifest
carries the same run key is returned as is; a killed run resumes from `.<out>.resume/`.

Modules: `sft_config` (SFTConfig), `sft_data` (examples, batching, fingerprints), `sft_resume` (resume
state), `sft_trainer` (the step loop), `sft_metrics` (validation / evaluation metrics).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Protocol, TypeVar

import torch

from llm_i2i.config import config_hash, to_dict
from llm_i2i.data import load_dataset
from llm_i2i.llm.modeling import MANIFEST, TEXT_INITS
from llm_i2i.llm.sft_config import SFTConfig
from llm_i2i.llm.sft_data import content_fingerprint
from llm_i2i.llm.sft_metrics import discriminator_auc, evaluate_generator, roc_auc
from llm_i2i.llm.sft_resume import SharedWork
from llm_i2i.llm.sft_trainer import SFTJob, train_worker
from llm_i2i.llm.tokenizer import build_tokenizer
from llm_i2i.progress import log

T = TypeVar("T")


class SFTRunner(Protocol):
    """Where training and model-loading evaluation run."""

    def train(self, job: SFTJob, cfg: SFTConfig) -> None:
        """Run `sft_trainer.train_worker(job, rank, world)` on `cfg.num_workers` processes."""

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` where a model may be loaded (a GPU worker on a cluster)."""


class LocalRunner:
    """This process: one worker, on CUDA when `use_gpu` allows and it is usable here."""

    def train(self, job: SFTJob, cfg: SFTConfig) -> None:
        if cfg.distributed:
            raise ValueError(f"sft: num_workers={cfg.num_workers} / use_ray={cfg.use_ray} needs the Ray runner "
                             "(ray_jobs.train_llm.RaySFTRunner); the command line and ray_jobs pass it")
        use_gpu = job.use_gpu if job.use_gpu is not None else torch.cuda.is_available()
        train_worker(replace(job, use_gpu=use_gpu))

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return fn(*args, **kwargs)


def resume_dir_of(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.resume"


def run_key(cfg: SFTConfig, fingerprints: dict[str, str]) -> str:
    return config_hash({"config": cfg.run_hash(), **fingerprints})


def _fingerprints(cfg: SFTConfig, dataset_dir: Path) -> dict[str, str]:
    prints = {"data_fingerprint": content_fingerprint(dataset_dir)}
    if cfg.model.base_model and Path(cfg.model.base_model).exists():
        prints["base_model_fingerprint"] = content_fingerprint(cfg.model.base_model)
    if cfg.model.resolved_item_init in TEXT_INITS and Path(cfg.model.item_text_base).exists():
        prints["item_text_base_fingerprint"] = content_fingerprint(cfg.model.item_text_base)
    return prints


def _prepare_resume_dir(resume: Path, key: str, cfg: SFTConfig, dataset_dir: Path) -> None:
    """The resume dir belongs to one run key; another key's leftovers (changed config or data) are removed,
    and the tokenizer is built there once, so every worker and every resume reads the same one."""
    key_file = resume / "run_key.json"
    if key_file.exists() and json.loads(key_file.read_text()).get("run_key") != key:
        log.info(f"{resume} holds another run (config or data changed); starting over")
        shutil.rmtree(resume)
    if not key_file.exists():
        shutil.rmtree(resume, ignore_errors=True)
        ds = load_dataset(dataset_dir)
        build_tokenizer(ds.items, out_dir=resume / "tokenizer", vocab_size=cfg.model.vocab_size,
                        base_model=cfg.model.base_model)
        (resume / "run_key.json").write_text(json.dumps({"run_key": key, "sft_config": to_dict(cfg)}))


def finished_key(out_dir: Path) -> str | None:
    try:
        return json.loads((out_dir / MANIFEST).read_text()).get("run_key")
    except FileNotFoundError:
        return None


def run_sft(cfg: SFTConfig, dataset_dir: str | Path, out_dir: str | Path, runner: SFTRunner | None = None,
            shared_uri: str | None = None) -> Path | None:
    """Train the `cfg.role` LLM on the dataset at `dataset_dir` into the HF checkpoint dir `out_dir`.

    `shared_uri` (a URI storage root's `_work/<stage>-<key>`): the workers share tokenizer, resume states and
    the finished checkpoint there instead of under `out_dir` (`sft_resume.SharedWork`), so they may run on nodes
    that cannot see this one's disk; the checkpoint is then fetched into `out_dir`.
    Returns `out_dir`, or None when `stop_after_steps` stopped the run early (run again to resume).
    """
    cfg.validate()
    runner = runner or LocalRunner()
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    fingerprints = _fingerprints(cfg, dataset_dir)  # fails on a missing dataset before any reuse
    key = run_key(cfg, fingerprints)
    shared = SharedWork(shared_uri) if shared_uri else None
    if finished_key(out_dir) == key or (shared and shared.fetch_model(out_dir, key, MANIFEST)):
        log.info(f"{out_dir} already holds this SFT run (run key {key}); skipping")
        return out_dir
    resume = resume_dir_of(out_dir)
    _prepare_resume_dir(resume, key, cfg, dataset_dir)
    if shared:
        shared.publish(resume / "tokenizer", key)
    job = SFTJob(to_dict(cfg), str(dataset_dir.resolve()) if dataset_dir.exists() else str(dataset_dir),
                 str(out_dir.resolve()), str(resume.resolve()), key, cfg.use_gpu, fingerprints, shared_uri)
    runner.train(job, cfg)
    if shared:
        shared.fetch_model(out_dir, key, MANIFEST)
    if finished_key(out_dir) != key:
        log.info(f"SFT stopped before the end; its resume state is in {shared_uri or resume}: run again to continue")
        return None
    shutil.rmtree(resume, ignore_errors=True)
    if shared:
        shared.drop_states()
    return out_dir


__all__ = [
    "LocalRunner",
    "SFTConfig",
    "SFTRunner",
    "discriminator_auc",
    "evaluate_generator",
    "roc_auc",
    "run_sft",
]
