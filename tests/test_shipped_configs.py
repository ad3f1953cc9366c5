"""Every shipped configs/*.yaml loads through the loaders that use it, down to each stage's own typed config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llm_i2i.config import load_config
from llm_i2i.i2i import make_backbone
from llm_i2i.pipeline.config import PipelineConfig
from llm_i2i.pipeline.tune import load_sweep

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHIPPED = sorted(CONFIGS.glob("*.yaml"))


def _is_sweep(path: Path) -> bool:
    return "pipeline_config" in (yaml.safe_load(path.read_text()) or {})


def check_pipeline(cfg: PipelineConfig) -> None:
    """Every section is its stage's typed config, validated when PipelineConfig loads; the backbones build."""
    from llm_i2i.llm.discriminate import DiscriminateConfig
    from llm_i2i.llm.generate import GenerateConfig
    from llm_i2i.llm.sft import SFTConfig

    assert (cfg.sft_generator.role, cfg.sft_discriminator.role) == ("generator", "discriminator")
    assert isinstance(cfg.sft_generator, SFTConfig) and isinstance(cfg.generate, GenerateConfig)
    assert isinstance(cfg.discriminate, DiscriminateConfig)
    for backbone in cfg.backbones:
        make_backbone(backbone, None, cfg.i2i.get(backbone, {}))


def test_configs_are_shipped():
    assert {p.name for p in SHIPPED} >= {"quickstart.yaml", "beauty.yaml", "toys.yaml"}


@pytest.mark.parametrize("path", [p for p in SHIPPED if not _is_sweep(p)], ids=lambda p: p.name)
def test_shipped_pipeline_config_loads(path):
    cfg = load_config(PipelineConfig, path)
    check_pipeline(cfg)
    if cfg.data not in ("default", "synthetic"):
        assert cfg.data.startswith("../shared/data/"), "shipped configs point at the shared data, relative to the repo"


@pytest.mark.parametrize("path", [p for p in SHIPPED if _is_sweep(p)], ids=lambda p: p.name)
def test_shipped_sweep_config_loads_with_its_pipeline_config(path):
    sweep = load_sweep(str(path), [])
    pipeline = CONFIGS.parent / sweep.pipeline_config
    assert pipeline.exists(), f"{path.name}: pipeline_config {sweep.pipeline_config} does not exist"
    check_pipeline(load_config(PipelineConfig, pipeline))
    assert sweep.grid(["run"])
