"""Supervised fine-tuning of the generator / discriminator on the TRAIN split, and their quality metrics.

`run_sft(cfg, dataset_dir, out_dir)` trains in-process (plain PyTorch) or, with `num_workers > 1` or
`use_ray`, through Ray Train + DeepSpeed (`ray_jobs/train_llm.py`); both drive the same `SFTObjective`
on the same batches. Validation targets are used only to pick the best epoch and to report metrics.
A killed plain run resumes from `<out>.resume/` (weights, optimizer, position in the epoch; safetensors +
JSON); a finished `out_dir` with the same config hash is returned as is.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm_i2i.config import config_hash, to_dict
from llm_i2i.data import LeaveOneOut, leave_one_out, load_dataset, long_tail_mask
from llm_i2i.eval.evaluate import evaluate_topk
from llm_i2i.eval.protocol import EvalConfig
from llm_i2i.io import atomic_path, write_json
from llm_i2i.llm.losses import SFTObjective
from llm_i2i.llm.modeling import MANIFEST, ModelConfig, build_model, load_checkpoint, save_checkpoint
from llm_i2i.llm.prompts import encode_prompts, generator_prompt, titles_from_items
from llm_i2i.llm.scoring import next_item_scores, topn_items, yes_probability
from llm_i2i.llm.sft_data import SFTExamples, collate, discriminator_examples, epoch_batches, generator_examples
from llm_i2i.llm.tokenizer import answer_token_ids, build_tokenizer, item_vocabulary
from llm_i2i.progress import Progress, log


@dataclass
class SFTConfig:
    role: str = "generator"  # generator | discriminator
    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = 5
    lr: float = 3e-3  # paper: 5e-5 for a 7B base; a small scratch model needs far more
    weight_decay: float = 0.0
    warmup_steps: int = 30
    min_lr_ratio: float = 0.1  # linear decay to lr * this at the last step
    batch_size: int = 128  # paper: 16 (7B); examples per optimizer step over all workers
    max_length: int = 64  # target tokens per generator training sequence; longer histories are chunked
    max_history: int = 10  # items in inference prompts and discriminator training prompts
    alpha: float = 4.0  # loss weight of long-tail targets (paper)
    beta: float = 1.0  # loss weight of the other targets
    long_tail_fraction: float = 0.2
    neg_ratio: int = 1  # discriminator negatives per positive
    positions_per_user: int = 1  # discriminator positives per user (always the last train transition)
    hard_negatives: bool = False  # discriminator negatives from Swing neighbours of the user's last item
    titles: bool = False  # put item titles in the prompts
    num_workers: int = 1
    use_ray: bool = False
    use_deepspeed: bool = True  # on the Ray path
    zero_stage: int = 2
    bf16: bool = False
    seed: int = 0
    checkpoint_every: int = 200  # optimizer steps between resume states (plain) / Ray Train reports
    eval_users: int = 4000  # validation users for the per-epoch model selection (0: all)
    eval_batch_size: int = 512
    stop_after_steps: int | None = None  # stop this invocation after N steps, leaving the resume state
    threads: int | None = None  # torch intra-op threads (None: torch default)

    def validate(self) -> None:
        if self.role not in ("generator", "discriminator"):
            raise ValueError(f"sft.role must be generator|discriminator, got {self.role!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("sft: epochs, batch_size and lr must be positive")
        if self.alpha <= 0 or self.beta <= 0:
            raise ValueError("sft: alpha and beta must be positive")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"sft.zero_stage must be 0-3, got {self.zero_stage}")
        if self.num_workers < 1 or self.neg_ratio < 1 or self.positions_per_user < 1:
            raise ValueError("sft: num_workers, neg_ratio and positions_per_user must be >= 1")
        self.model.validate()

    @property
    def distributed(self) -> bool:
        return self.num_workers > 1 or self.use_ray

    def run_hash(self) -> str:
        """Hash of what determines the trained weights (not how often we checkpoint or when we stop)."""
        d = to_dict(self)
        for k in ("stop_after_steps", "threads", "checkpoint_every", "eval_batch_size"):
            d.pop(k)
        return config_hash(d)


@dataclass
class Prepared:
    """Everything a training process needs, built deterministically from the dataset dir."""

    tokenizer: Any
    items: Any
    split: LeaveOneOut
    examples: SFTExamples
    tail_mask: np.ndarray  # over item columns (= dense item indices)
    titles: dict[int, str] | None


def prepare_sft(cfg: SFTConfig, dataset_dir: Path, tokenizer=None) -> Prepared:
    ds = load_dataset(dataset_dir)
    split = leave_one_out(ds.sequences())
    train = split.train
    if tokenizer is None:
        tokenizer = build_tokenizer(ds.items, vocab_size=cfg.model.vocab_size, base_model=cfg.model.base_model)
    titles = titles_from_items(ds.items) if cfg.titles else None
    if cfg.role == "generator":
        prefix = len(encode_prompts(tokenizer, [generator_prompt([], titles=titles)])[0])
        per_item = 1 if titles is None else 2 + int(np.mean([len(t.split()) for t in titles.values()]) * 1.5)
        examples = generator_examples(train, tokenizer, max_items=max(1, (cfg.max_length - prefix) // per_item + 1), titles=titles)
    else:
        hard = _swing_neighbors(train) if cfg.hard_negatives else None
        examples = discriminator_examples(train, tokenizer, cfg.positions_per_user, cfg.neg_ratio, cfg.max_history,
                                          cfg.seed, hard, titles=titles)
    tail = long_tail_mask(train.item_counts(), cfg.long_tail_fraction)
    log.info(f"SFT {cfg.role}: {examples.report}")
    return Prepared(tokenizer, ds.items, split, examples, tail, titles)


def make_objective(cfg: SFTConfig, prep: Prepared, model) -> SFTObjective:
    _, tids = item_vocabulary(prep.tokenizer)
    answers = answer_token_ids(prep.tokenizer) if cfg.role == "discriminator" else None
    return SFTObjective(model, cfg.role, tids, prep.tail_mask, cfg.alpha, cfg.beta, answers)


def lr_at(cfg: SFTConfig, step: int, total: int) -> float:
    """Linear warm-up, then linear decay to lr * min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(total - cfg.warmup_steps, 1)
    return cfg.lr * (1 - (1 - cfg.min_lr_ratio) * min(frac, 1.0))


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def select_metric(cfg: SFTConfig, model, prep: Prepared, max_users: int | None) -> tuple[str, float]:
    """The validation number the best epoch is picked by."""
    model.eval()
    try:
        if cfg.role == "generator":
            m = generator_metrics(model, prep.tokenizer, prep.split, EvalConfig(split="valid", ks=(10,)),
                                  cfg.max_history, True, max_users, cfg.eval_batch_size, prep.titles)
            return "ndcg@10", m["ndcg@10"]
        return "auc", auc_on_split(model, prep.tokenizer, prep.split, "valid", None, cfg.max_history, max_users,
                                   cfg.seed, cfg.eval_batch_size, prep.titles)
    finally:
        model.train()


# ------------------------------------------------------------------ plain (single-process) training


def _resume_dir(out_dir: Path) -> Path:
    return out_dir.parent / f".{out_dir.name}.resume"


def _save_resume(path: Path, model, opt, state: dict[str, Any], best_model: dict | None) -> None:
    from safetensors.torch import save_file, save_model

    path.mkdir(parents=True, exist_ok=True)
    with atomic_path(path / "model.safetensors") as tmp:
        save_model(model, str(tmp))
    flat, meta = {}, {}
    for pid, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                flat[f"{pid}.{k}"] = v.contiguous()
            else:
                meta[f"{pid}.{k}"] = v
    with atomic_path(path / "optimizer.safetensors") as tmp:
        save_file(flat, str(tmp))
    if best_model is not None:
        with atomic_path(path / "best.safetensors") as tmp:
            save_file(best_model, str(tmp))
    write_json({**state, "optimizer_scalars": meta}, path / "state.json")


def _load_resume(path: Path, model, opt, cfg_hash: str) -> tuple[dict[str, Any] | None, dict | None]:
    from safetensors.torch import load_file, load_model

    if not (path / "state.json").exists():
        return None, None
    state = json.loads((path / "state.json").read_text())
    if state.get("config_hash") != cfg_hash:
        raise ValueError(f"{path}: resume state is from a different config ({state.get('config_hash')} != {cfg_hash}); "
                         "delete it or use another --out")
    load_model(model, str(path / "model.safetensors"))
    flat = load_file(str(path / "optimizer.safetensors"))
    sd = opt.state_dict()
    per: dict[int, dict[str, Any]] = {}
    for key, v in flat.items():
        pid, k = key.split(".", 1)
        per.setdefault(int(pid), {})[k] = v
    for key, v in state.pop("optimizer_scalars", {}).items():
        pid, k = key.split(".", 1)
        per.setdefault(int(pid), {})[k] = v
    sd["state"] = per
    opt.load_state_dict(sd)
    best = load_file(str(path / "best.safetensors")) if (path / "best.safetensors").exists() else None
    return state, best


def train_plain(cfg: SFTConfig, prep: Prepared, out_dir: Path) -> tuple[Any, dict[str, Any]] | None:
    """Train in this process; None when stopped early by `stop_after_steps` (resume state left behind)."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, prep.tokenizer, prep.items)
    objective = make_objective(cfg, prep, model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    lengths = prep.examples.lengths
    steps_per_epoch = len(epoch_batches(lengths, cfg.batch_size, cfg.seed, 0))
    total = steps_per_epoch * cfg.epochs
    rdir, chash = _resume_dir(out_dir), cfg.run_hash()
    state, best = _load_resume(rdir, model, opt, chash)
    state = state or {"config_hash": chash, "epoch": 0, "step_in_epoch": 0, "global_step": 0,
                      "best_metric": -math.inf, "best_epoch": -1, "history": [], "train_seconds": 0.0, "tokens": 0}
    if state["global_step"]:
        log.info(f"resuming {cfg.role} SFT at epoch {state['epoch']} step {state['step_in_epoch']} ({rdir})")
    model.train()
    done_here = 0
    pid = pad_id(prep.tokenizer)
    while state["epoch"] < cfg.epochs:
        epoch = state["epoch"]
        batches = epoch_batches(lengths, cfg.batch_size, cfg.seed, epoch)
        prog = Progress(len(batches), f"{cfg.role} SFT epoch {epoch + 1}/{cfg.epochs}", unit="step")
        prog.done = state["step_in_epoch"]
        t0, loss_sum, n_loss = time.perf_counter(), 0.0, 0
        for idx in batches[state["step_in_epoch"]:]:
            batch = collate(prep.examples, idx, pid, cfg.role)
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, state["global_step"], total)
            loss = objective(**batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            state["global_step"] += 1
            state["step_in_epoch"] += 1
            state["tokens"] += int(batch["attention_mask"].sum())
            loss_sum, n_loss = loss_sum + loss.item(), n_loss + 1
            done_here += 1
            elapsed = state["train_seconds"] + time.perf_counter() - t0
            prog.update(1, loss=loss.item(), tokens_per_s=state["tokens"] / max(elapsed, 1e-9))
            stop = cfg.stop_after_steps is not None and done_here >= cfg.stop_after_steps
            if stop or state["global_step"] % cfg.checkpoint_every == 0:
                _save_resume(rdir, model, opt, {**state, "train_seconds": elapsed}, None)
            if stop:
                log.info(f"stopping after {done_here} steps as asked; resume state in {rdir}")
                return None
        state["train_seconds"] += time.perf_counter() - t0
        name, value = select_metric(cfg, model, prep, cfg.eval_users or None)
        state["history"].append({"epoch": epoch + 1, "train_loss": loss_sum / max(n_loss, 1), f"valid_{name}": value})
        log.info(f"epoch {epoch + 1}: train loss {loss_sum / max(n_loss, 1):.4f}, valid {name} {value:.4f}")
        if value > state["best_metric"]:
            state["best_metric"], state["best_epoch"] = value, epoch + 1
            best = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight" or not model.config.tie_word_embeddings}
        state["epoch"], state["step_in_epoch"] = epoch + 1, 0
        _save_resume(rdir, model, opt, state, best)
    if best is not None:
        model.load_state_dict(best, strict=False)
    info = {k: state[k] for k in ("history", "best_epoch", "best_metric", "train_seconds", "tokens", "global_step")}
    info["tokens_per_s"] = state["tokens"] / max(state["train_seconds"], 1e-9)
    return model, info


# ------------------------------------------------------------------ entry point


def run_sft(cfg: SFTConfig, dataset_dir: Path, out_dir: Path) -> Path | None:
    """Train the `cfg.role` LLM on the canonical dataset at `dataset_dir`; the HF checkpoint dir is `out_dir`.

    Returns `out_dir`, or None when `stop_after_steps` stopped the run early (run again to resume).
    """
    cfg.validate()
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    chash = cfg.run_hash()
    if (out_dir / MANIFEST).exists() and json.loads((out_dir / MANIFEST).read_text()).get("config_hash") == chash:
        log.info(f"{out_dir} already holds this SFT run (config {chash}); skipping")
        return out_dir
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    if cfg.distributed:
        from ray_jobs.train_llm import train_with_ray

        tok_dir = _resume_dir(out_dir) / "tokenizer"
        if not tok_dir.exists():
            ds = load_dataset(dataset_dir)
            build_tokenizer(ds.items, out_dir=tok_dir, vocab_size=cfg.model.vocab_size, base_model=cfg.model.base_model)
        result = train_with_ray(cfg, dataset_dir, out_dir, tok_dir)
        if result is None:
            return None
        model, info = result
        from transformers import AutoTokenizer

        prep = prepare_sft(cfg, dataset_dir, AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True))
    else:
        prep = prepare_sft(cfg, dataset_dir)
        result = train_plain(cfg, prep, out_dir)
        if result is None:
            return None
        model, info = result
    model.eval()
    metrics = final_metrics(cfg, model, prep)
    manifest = {
        "role": cfg.role,
        "config_hash": chash,
        "sft_config": to_dict(cfg),
        "dataset_dir": str(dataset_dir),
        "examples": prep.examples.report,
        "training": info,
        "metrics": metrics,
        "total_seconds": time.perf_counter() - t0,
    }
    save_checkpoint(model, prep.tokenizer, out_dir, manifest)
    shutil.rmtree(_resume_dir(out_dir), ignore_errors=True)
    log.info(f"{cfg.role} checkpoint: {out_dir} metrics {json.dumps(metrics)[:300]}")
    return out_dir


def final_metrics(cfg: SFTConfig, model, prep: Prepared) -> dict[str, Any]:
    if cfg.role == "generator":
        m = generator_metrics(model, prep.tokenizer, prep.split, EvalConfig(split="valid", ks=(10,)),
                              cfg.max_history, True, None, cfg.eval_batch_size, prep.titles)
        return {"valid_exclude_history": True, "valid_recall@10": m["recall@10"], "valid_ndcg@10": m["ndcg@10"],
                "valid_long_tail_recall@10": m["long_tail"]["recall@10"], "valid_long_tail_ndcg@10": m["long_tail"]["ndcg@10"]}
    return {"valid_auc_random": auc_on_split(model, prep.tokenizer, prep.split, "valid", None, cfg.max_history,
                                            None, cfg.seed, cfg.eval_batch_size, prep.titles)}


# ------------------------------------------------------------------ quality


def generator_topk(model, tokenizer, hist, rows: np.ndarray, history_len: int, exclude_history: bool, k: int,
                   batch_size: int = 512, titles=None) -> np.ndarray:
    """Top-k dense items [len(rows), k] for users `rows` of `hist` (Sequences) from their last `history_len` items."""
    ids, _ = item_vocabulary(tokenizer)
    if not np.array_equal(ids, hist.item_ids):
        raise ValueError("the checkpoint's items differ from the dataset's; was it trained on this dataset?")
    out = np.full((len(rows), k), -1, dtype=np.int64)
    prog = Progress(len(rows), "generator top-k", unit="user", every_s=10)
    for s in range(0, len(rows), batch_size):
        users = rows[s : s + batch_size]
        seqs = [hist.user(u) for u in users]
        scores = next_item_scores(model, tokenizer, [hist.item_ids[q[-history_len:]].tolist() for q in seqs],
                                  titles=titles, max_history=history_len, batch_size=batch_size)
        excl = [q.tolist() for q in seqs] if exclude_history else None
        out[s : s + len(users)], _ = topn_items(scores, k, excl)
        prog.update(len(users))
    return out


def generator_metrics(model, tokenizer, split: LeaveOneOut, eval_cfg: EvalConfig, history_len: int,
                      exclude_history: bool, max_users: int | None = None, batch_size: int = 512, titles=None) -> dict:
    targets = split.targets(eval_cfg.split)
    rows = np.flatnonzero(targets >= 0)
    if max_users and len(rows) > max_users:
        rows = np.sort(np.random.default_rng(0).choice(rows, max_users, replace=False))
    sub = np.full(len(targets), -1, np.int64)
    sub[rows] = targets[rows]
    topk = np.full((len(targets), eval_cfg.max_k), -1, dtype=np.int64)
    topk[rows] = generator_topk(model, tokenizer, split.history(eval_cfg.split), rows, history_len, exclude_history,
                                eval_cfg.max_k, batch_size, titles)
    masked = _MaskedTargets(split, sub)
    return evaluate_topk(topk, masked, eval_cfg)


class _MaskedTargets:
    """A LeaveOneOut view that evaluates only a subset of users (the rest get target -1)."""

    def __init__(self, split: LeaveOneOut, targets: np.ndarray):
        self._split, self._targets = split, targets

    def targets(self, which: str) -> np.ndarray:
        return self._targets

    def __getattr__(self, name):
        return getattr(self._split, name)


def evaluate_generator(checkpoint: str | Path, dataset_dir: str | Path, eval_cfg: EvalConfig, history_len: int = 10,
                       exclude_history: bool = True, max_users: int | None = None) -> dict[str, Any]:
    """The generator used alone as a recommender: top-K from each user's last `history_len` items."""
    model, tok, manifest = load_checkpoint(checkpoint)
    ds = load_dataset(dataset_dir)
    split = leave_one_out(ds.sequences())
    titles = titles_from_items(ds.items) if manifest.get("sft_config", {}).get("titles") else None
    m = generator_metrics(model, tok, split, eval_cfg, history_len, exclude_history, max_users, titles=titles)
    m["generator"] = {"checkpoint": str(checkpoint), "history_len": history_len, "exclude_history": exclude_history}
    return m


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney ROC-AUC with average ranks for ties."""
    from scipy.stats import rankdata

    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC-AUC needs both positives and negatives")
    r = rankdata(scores)
    return float((r[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_pairs(split: LeaveOneOut, which: str, hard_neighbors, max_history: int, max_users: int | None,
              seed: int) -> tuple[list[list[int]], list[int], np.ndarray]:
    """(histories, candidates, labels) as external ids: each evaluated user's held-out target (positive) and one
    sampled negative, never an item the user touched (random, or from the Swing neighbours of the last item)."""
    targets = split.targets(which)
    hist = split.history(which)
    rows = np.flatnonzero(targets >= 0)
    rng = np.random.default_rng(seed + 1)
    if max_users and len(rows) > max_users:
        rows = np.sort(rng.choice(rows, max_users, replace=False))
    full = split.full
    histories, cands, labels = [], [], []
    for u in rows:
        h = hist.user(u)[-max_history:]
        seen = set(full.user(u).tolist())
        neg = -1
        if hard_neighbors is not None and len(h):
            nb, _ = hard_neighbors.row(int(h[-1]))
            pool = [j for j in nb[:50].tolist() if j not in seen]
            neg = int(rng.choice(pool)) if pool else -1
        while neg < 0 or neg in seen:
            neg = int(rng.integers(full.n_items))
        ext = hist.item_ids[h].tolist()
        histories += [ext, ext]
        cands += [int(hist.item_ids[targets[u]]), int(hist.item_ids[neg])]
        labels += [1, 0]
    return histories, cands, np.array(labels)


def auc_on_split(model, tokenizer, split: LeaveOneOut, which: str, hard_neighbors, max_history: int,
                 max_users: int | None, seed: int, batch_size: int = 512, titles=None) -> float:
    """ROC-AUC of the discriminator's P(Yes) on `auc_pairs`."""
    histories, cands, labels = auc_pairs(split, which, hard_neighbors, max_history, max_users, seed)
    p = yes_probability(model, tokenizer, histories, cands, titles=titles, max_history=max_history, batch_size=batch_size)
    return roc_auc(labels, p)


def _swing_neighbors(train):
    from llm_i2i.i2i.swing import Swing, SwingConfig

    return Swing(SwingConfig(k=50)).fit(train)


def discriminator_auc(checkpoint: str | Path, dataset_dir: str | Path, negatives: str = "random", split: str = "valid",
                      max_users: int | None = None, seed: int = 0) -> float:
    """ROC-AUC of P(Yes) on held-out positives vs random (or Swing-hard) negatives."""
    if negatives not in ("random", "hard"):
        raise ValueError(f"negatives must be 'random' or 'hard', got {negatives!r}")
    model, tok, manifest = load_checkpoint(checkpoint)
    ds = load_dataset(dataset_dir)
    loo = leave_one_out(ds.sequences())
    hard = _swing_neighbors(loo.train) if negatives == "hard" else None
    sc = manifest.get("sft_config", {})
    titles = titles_from_items(ds.items) if sc.get("titles") else None
    return auc_on_split(model, tok, loo, split, hard, int(sc.get("max_history", 10)), max_users, seed, titles=titles)


__all__ = [
    "SFTConfig",
    "discriminator_auc",
    "evaluate_generator",
    "prepare_sft",
    "roc_auc",
    "run_sft",
]
