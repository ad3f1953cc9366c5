"""The whole pipeline's config: one YAML with a section per stage (see configs/*.yaml).

LLM stage sections (`sft_generator`, `sft_discriminator`, `generate`, `discriminate`) are passed as dicts to
the LLM modules' own dataclass configs (`llm_i2i.llm.sft.SFTConfig`, ...), which validate them; this module
only owns the orchestration fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llm_i2i.eval.protocol import EvalConfig
from llm_i2i.i2i import BACKBONES
from llm_i2i.pipeline.fuse import FuseConfig

STAGES = (
    "prepare", "sft_generator", "sft_discriminator", "generate", "discriminate",
    "fuse", "train_i2i", "build_index", "evaluate",
)


@dataclass
class PipelineConfig:
    data: str = "default"  # dataset path or 'default' (embedded synthetic data)
    synthetic: dict[str, Any] = field(default_factory=dict)  # SyntheticConfig overrides for data='default'
    backbones: tuple[str, ...] = ("swing", "bm25", "bpr", "youtubednn")
    i2i: dict[str, Any] = field(default_factory=dict)  # backbone name -> its config overrides
    # LLM stages: configs of the LLM modules; a checkpoint path reuses a trained model instead of SFT
    sft_generator: dict[str, Any] = field(default_factory=dict)
    sft_discriminator: dict[str, Any] = field(default_factory=dict)
    generator_checkpoint: str | None = None
    discriminator_checkpoint: str | None = None
    # start the discriminator's SFT from the fine-tuned generator (its item embeddings already encode which items
    # follow which histories) instead of from scratch / model.base_model
    discriminator_from_generator: bool = True
    generate: dict[str, Any] = field(default_factory=dict)
    discriminate: dict[str, Any] = field(default_factory=dict)
    score_real: bool = True  # the discriminator also scores real training pairs ("w/o generator" ablation)
    fuse: FuseConfig = field(default_factory=FuseConfig)
    # ablations / figures, all on the first backbone (Swing in the paper)
    ablations: bool = True
    wo_longtail_loss: bool = False  # "w/o long-tail loss" row: a second generator with alpha=beta=1
    alpha1_generator_checkpoint: str | None = None  # reuse a trained α=1 generator for it (else it is trained)
    recall_numbers: tuple[int, ...] = ()  # Figure 5a: fuse with generator ranks < N
    confidence_levels: tuple[float, ...] = ()  # Figure 5b: fuse with confidence >= c
    # evaluation
    eval_preset: str = "paper"
    eval_overrides: dict[str, Any] = field(default_factory=dict)
    generator_alone: bool = True  # evaluate the generator as a recommender (ablation "w/o Swing")
    llm_eval_max_users: int | None = None  # first N users for generator-alone metrics and AUC (CPU budget)
    discriminator_auc: bool = True
    index_backbone: str = "swing"  # which fitted model's LLM-I2I neighbours become the served index
    # Ray
    ray_address: str | None = None  # None = RAY_ADDRESS, else start a local Ray; "auto" = join a running cluster
    # the run's storage root (--out) is a mount every node sees at the same path; required on a multi-node cluster
    shared_storage: bool = False
    num_cpus: int | None = None  # local Ray size
    cpus_per_fit: float = 1.0  # Ray resources of one I2I fit task

    def validate(self) -> None:
        unknown = [b for b in self.backbones if b not in BACKBONES]
        if unknown or not self.backbones:
            raise ValueError(f"backbones {unknown or '[]'} invalid; choose from {sorted(BACKBONES)}")
        bad_i2i = set(self.i2i) - set(BACKBONES)
        if bad_i2i:
            raise ValueError(f"i2i: unknown backbone section(s) {sorted(bad_i2i)}")
        if self.index_backbone not in self.backbones:
            raise ValueError(f"index_backbone {self.index_backbone!r} is not among backbones {self.backbones}")
        if any(n <= 0 for n in self.recall_numbers):
            raise ValueError(f"recall_numbers must be positive, got {self.recall_numbers}")
        if any(not 0 <= c <= 1 for c in self.confidence_levels):
            raise ValueError(f"confidence_levels must be in [0, 1], got {self.confidence_levels}")
        if self.cpus_per_fit <= 0:
            raise ValueError("cpus_per_fit must be positive")
        self.eval_config()

    def eval_config(self, split: str | None = None) -> EvalConfig:
        over = dict(self.eval_overrides)
        if "ks" in over:
            over["ks"] = tuple(over["ks"])
        if split is not None:
            over["split"] = split
        return EvalConfig.from_preset(self.eval_preset, **over)
