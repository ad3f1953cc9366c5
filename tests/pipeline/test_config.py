"""Every pipeline section is typed and checked when the config is loaded, not when its stage runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llm_i2i.config import ConfigError, from_dict, load_config
from llm_i2i.llm.generate import GenerateConfig
from llm_i2i.llm.sft import SFTConfig
from llm_i2i.pipeline.config import PipelineConfig
from llm_i2i.pipeline.fuse import AUTO

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PIPELINE_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith("tune_"))


@pytest.mark.parametrize("section, bad", [
    ("generate", {"nope": 1}), ("generate", {"engine": "tgi"}), ("discriminate", {"split": "test"}),
    ("sft_generator", {"epochs": 0}), ("sft_discriminator", {"lr": "fast"}), ("synthetic", {"p_chain": 2.0}),
    ("fuse", {"threshold": "high"}), ("i2i", {"swing": {"alpah1": 1.0}}), ("i2i", {"swing": {"k": 0}}),
])
def test_bad_section_fails_at_load(section, bad):
    with pytest.raises((ConfigError, ValueError)):
        from_dict(PipelineConfig, {section: bad})


def test_sections_are_dataclasses_and_roles_follow_the_section():
    cfg = from_dict(PipelineConfig, {"generate": {"recall_number": 7}, "sft_discriminator": {"role": "generator"}})
    assert isinstance(cfg.generate, GenerateConfig) and cfg.generate.recall_number == 7
    assert isinstance(cfg.sft_generator, SFTConfig) and cfg.sft_generator.role == "generator"
    assert cfg.sft_discriminator.role == "discriminator"
    assert cfg.fuse.threshold == AUTO


def test_figure_5a_n_cannot_exceed_the_generated_n():
    with pytest.raises(ConfigError, match="recall_numbers"):
        from_dict(PipelineConfig, {"generate": {"recall_number": 5}, "recall_numbers": [1, 5, 10]})
    with pytest.raises(ConfigError, match="max_rank"):
        from_dict(PipelineConfig, {"generate": {"recall_number": 5}, "fuse": {"max_rank": 6}})
    ok = from_dict(PipelineConfig, {"generate": {"recall_number": 10}, "recall_numbers": [1, 10], "fuse": {"max_rank": 10}})
    assert ok.fuse.max_rank == 10


def test_recall_at_10_is_evaluated():
    with pytest.raises(ConfigError, match="10"):
        from_dict(PipelineConfig, {"eval_overrides": {"ks": [5, 20]}})


@pytest.mark.parametrize("path", PIPELINE_CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_carry_no_hand_picked_cut(path):
    cfg = load_config(PipelineConfig, path)
    assert cfg.fuse.threshold == AUTO
    assert "threshold" not in (yaml.safe_load(path.read_text()).get("fuse") or {})
