"""The whole pipeline's config: one YAML with a section per stage (see configs/*.yaml).

Every section is its stage's own dataclass (`SyntheticConfig`, `SFTConfig`, `GenerateConfig`,
`DiscriminateConfig`, `FuseConfig`; each I2I section is checked against its backbone's config), so a typo
or a bad value stops the run when the config is loaded, not when its stage is reached. `validate` also
checks the sections against each other (Figure 5a's N against the generator's N).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from llm_i2i.config import ConfigError, from_dict
from llm_i2i.data.synthetic import SyntheticConfig
from llm_i2i.eval.protocol import EvalConfig
from llm_i2i.i2i import BACKBONES, backbone_classes
from llm_i2i.llm.discriminate import DiscriminateConfig
from llm_i2i.llm.generate import GenerateConfig
from llm_i2i.llm.sft import SFTConfig
from llm_i2i.pipeline.fuse import FuseConfig

STAGES = (
    "prepare", "sft_generator", "sft_discriminator", "generate", "discriminate",
    "fuse", "train_i2i", "build_index", "evaluate",
)


@dataclass
class PipelineConfig:
    data: str = "default"  # dataset path or 'default' (embedded synthetic data)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)  # the embedded data (data='default')
    backbones: tuple[str, ...] = ("swing", "bm25", "bpr", "youtubednn")
    i2i: dict[str, Any] = field(default_factory=dict)  # backbone name -> its config overrides
    # LLM stages: configs of the LLM modules; a checkpoint path reuses a trained model instead of SFT
    # (the section decides the role: `role` is set to generator / discriminator whatever the YAML says)
    sft_generator: SFTConfig = field(default_factory=SFTConfig)
    sft_discriminator: SFTConfig = field(default_factory=lambda: SFTConfig(role="discriminator"))
    generator_checkpoint: str | None = None
    discriminator_checkpoint: str | None = None
    # start the discriminator's SFT from the fine-tuned generator (its item embeddings already encode which items
    # follow which histories) instead of from scratch / model.base_model
    discriminator_from_generator: bool = True
    generate: GenerateConfig = field(default_factory=GenerateConfig)  # recall_number: the N items generated per user
    discriminate: DiscriminateConfig = field(default_factory=DiscriminateConfig)
    score_real: bool = True  # the discriminator also scores real training pairs ("w/o generator" ablation)
    fuse: FuseConfig = field(default_factory=FuseConfig)
    # ablations / figures, all on the first backbone (Swing in the paper)
    ablations: bool = True
    wo_longtail_loss: bool = False  # "w/o long-tail loss" row: a second generator with alpha=beta=1
    alpha1_generator_checkpoint: str | None = None  # reuse a trained α=1 generator for it (else it is trained)
    recall_numbers: tuple[int, ...] = ()  # Figure 5a: fuse with generator ranks < N (each N <= generate.recall_number)
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

    def __post_init__(self) -> None:
        self.sft_generator = replace(self.sft_generator, role="generator")
        self.sft_discriminator = replace(self.sft_discriminator, role="discriminator")

    def validate(self) -> None:
        unknown = [b for b in self.backbones if b not in BACKBONES]
        if unknown or not self.backbones:
            raise ValueError(f"backbones {unknown or '[]'} invalid; choose from {sorted(BACKBONES)}")
        bad_i2i = set(self.i2i) - set(BACKBONES)
        if bad_i2i:
            raise ValueError(f"i2i: unknown backbone section(s) {sorted(bad_i2i)}")
        if self.index_backbone not in self.backbones:
            raise ValueError(f"index_backbone {self.index_backbone!r} is not among backbones {self.backbones}")
        for name, overrides in self.i2i.items():
            from_dict(backbone_classes(name)[1], overrides, where=f"i2i.{name}")
        if any(n <= 0 for n in self.recall_numbers):
            raise ValueError(f"recall_numbers must be positive, got {self.recall_numbers}")
        generated = self.generate.recall_number
        too_big = [n for n in self.recall_numbers if n > generated]
        if too_big:
            raise ConfigError(f"recall_numbers {too_big} exceed generate.recall_number={generated}: ranks >= "
                              f"{generated} are never generated, so Figure 5a would be flat there")
        if self.fuse.max_rank is not None and self.fuse.max_rank > generated:
            raise ConfigError(f"fuse.max_rank={self.fuse.max_rank} exceeds generate.recall_number={generated}")
        if any(not 0 <= c <= 1 for c in self.confidence_levels):
            raise ValueError(f"confidence_levels must be in [0, 1], got {self.confidence_levels}")
        if self.cpus_per_fit <= 0:
            raise ValueError("cpus_per_fit must be positive")
        if 10 not in self.eval_config().ks:
            raise ConfigError("eval ks must include 10: the report and the auto cut use Recall@10")

    def eval_config(self, split: str | None = None) -> EvalConfig:
        over = dict(self.eval_overrides)
        if "ks" in over:
            over["ks"] = tuple(over["ks"])
        if split is not None:
            over["split"] = split
        return EvalConfig.from_preset(self.eval_preset, **over)
