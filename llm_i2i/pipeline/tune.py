"""The hyper-parameter sweep, scored on VALIDATION Recall@10 only (`cut.validation_metrics`, as the `auto`
confidence cut of the fuse stage is).

* The Ray Tune sweep (`ray_jobs/tune_sweep.py`): the generator's long-tail weight α (one pre-trained
  generator checkpoint per value), the confidence cut, the recall number N and Swing's α1/α2/β. The LLM work
  per generator (generate + discriminate, at the largest N) is done once and reused by every trial.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import pyarrow.parquet as pq

from llm_i2i.config import load_config
from llm_i2i.data import leave_one_out, read_canonical
from llm_i2i.eval.protocol import EvalConfig
from llm_i2i.pipeline.cut import OBJECTIVE, validation_metrics
from llm_i2i.pipeline.fuse import FuseConfig
from llm_i2i.uri import is_uri, uri_join

@dataclass
class SweepConfig:
    pipeline_config: Optional[str] = None  # the pipeline YAML whose run under `pipeline_out` is reused
    pipeline_out: str = "out/run"  # finished pipeline run (prepare, sft_discriminator, discriminate)
    generators: dict[str, str] = field(default_factory=dict)  # extra α label -> generator checkpoint (besides the run's)
    thresholds: tuple[float, ...] = (0.5, 0.9, 0.99, 0.995)
    recall_numbers: tuple[int, ...] = (5, 10, 20)
    swing_alpha1: tuple[float, ...] = (15.0,)
    swing_alpha2: tuple[float, ...] = (0.0,)
    swing_beta: tuple[float, ...] = (0.3,)
    cpus_per_trial: float = 0.5
    eval_preset: str = "paper"

    def validate(self) -> None:
        if not (self.thresholds and self.recall_numbers and self.swing_alpha1 and self.swing_alpha2 and self.swing_beta):
            raise ValueError("sweep: every grid needs at least one value")
        if self.cpus_per_trial <= 0:
            raise ValueError("sweep.cpus_per_trial must be positive")

    def grid(self, generator_names: list[str]) -> list[dict[str, Any]]:
        keys = ("generator", "threshold", "recall_number", "swing_alpha1", "swing_alpha2", "swing_beta")
        values = (generator_names, self.thresholds, self.recall_numbers, self.swing_alpha1, self.swing_alpha2,
                  self.swing_beta)
        return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def trial_metrics(params: dict[str, Any], dataset_dir: str, scored_path: str, eval_preset: str = "paper") -> dict[str, Any]:
    """One trial, plain Python: fuse with (threshold, N) -> Swing(α1, α2, β) -> validation metrics."""
    split = leave_one_out(read_canonical(dataset_dir).sequences())
    fuse_cfg = FuseConfig(threshold=float(params["threshold"]), max_rank=int(params["recall_number"]))
    swing = {k: float(params[f"swing_{k}"]) for k in ("alpha1", "alpha2", "beta")}
    return validation_metrics(split, pq.read_table(scored_path), fuse_cfg, "swing", swing,
                              EvalConfig.from_preset(eval_preset, split="valid"))


def prepare_generators(sweep: SweepConfig, ops) -> tuple[str, dict[str, str]]:
    """(dataset dir, {generator label: scored candidates}): the run's own generator(s), plus any extra checkpoint
    pushed through generate+discriminate (at the largest N) with the run's discriminator, through `ops`
    (`stages.LLMOps`)."""
    from llm_i2i.pipeline.artifacts import ArtifactStore
    from llm_i2i.pipeline.config import PipelineConfig
    from llm_i2i.pipeline.runner import run_stage
    from llm_i2i.pipeline.stages import checkpoint_of, dataset_dir

    cfg = load_config(PipelineConfig, sweep.pipeline_config)
    main = ArtifactStore(sweep.pipeline_out)
    data_dir = str(dataset_dir(main.get("prepare")))
    scored = {}
    for suffix in ("", "_alpha1"):  # the run's own generators (α=4, and α=1 when it ran the ablation)
        if main.manifest(f"discriminate{suffix}") is not None:
            sft = main.get(f"sft_generator{suffix}").manifest
            alpha = ((sft["stats"].get("sft_manifest") or {}).get("sft_config") or {}).get("alpha", sft["config"].get("alpha"))
            label = f"alpha={alpha:g}" if alpha is not None else f"run{suffix}"
            scored[label] = str(main.get(f"discriminate{suffix}").path / "scored.parquet")
    if not scored and not sweep.generators:
        raise FileNotFoundError(f"{sweep.pipeline_out}: no finished discriminate stage and no sweep.generators")
    n_max = max(sweep.recall_numbers)
    disc = str(checkpoint_of(main.get("sft_discriminator")))
    for label, ckpt in sweep.generators.items():
        gcfg = replace(cfg, generator_checkpoint=ckpt, discriminator_checkpoint=disc, score_real=False,
                       wo_longtail_loss=False, generate=replace(cfg.generate, recall_number=n_max))
        root = uri_join(sweep.pipeline_out, "tune_generators", label.replace("=", "_")) if is_uri(sweep.pipeline_out) \
            else str(Path(sweep.pipeline_out) / "tune_generators" / label.replace("=", "_"))
        store = ArtifactStore(root)
        for stage in ("prepare", "sft_generator", "sft_discriminator", "generate", "discriminate"):
            run_stage(stage, gcfg, root, ops, store=store)
        scored[label] = str(store.get("discriminate").path / "scored.parquet")
    return data_dir, scored


def summarize(rows: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Markdown table sorted by the objective, and the best row."""
    rows = sorted(rows, key=lambda r: -r[OBJECTIVE])
    cols = ["generator", "threshold", "recall_number", "swing_alpha1", "swing_alpha2", "swing_beta",
            "synthetic_kept", "recall@10", "ndcg@10", "long_tail_recall@10"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.4f}" if isinstance(r[c], float) and c.endswith("@10") else str(r[c])
                                       for c in cols) + " |")
    return "\n".join(lines), rows[0]


def load_sweep(path: Optional[str], overrides) -> SweepConfig:
    return load_config(SweepConfig, path, overrides)

