"""The one config-section loader every subcommand uses: a `--config` file is either one command's config (top
level) or a file of sections named like the commands; `--set` wins over both."""

import pytest

from llm_i2i.cli import build_parser
from llm_i2i.commands._common import config_section, load_command_config
from llm_i2i.config import ConfigError
from llm_i2i.index.service import ServeConfig


def test_section_is_used_only_when_the_file_has_it(tmp_path):
    sections, flat, bad = tmp_path / "all.yaml", tmp_path / "serve.yaml", tmp_path / "bad.yaml"
    sections.write_text("serve:\n  port: 9001\nsft:\n  epochs: 3\n")
    flat.write_text("port: 9002\n")
    bad.write_text("port: [9003\n")
    assert config_section(str(sections), "serve") == "serve"
    assert config_section(str(flat), "serve") is None
    assert config_section(None, "serve") is None
    assert config_section(str(bad), "serve") is None  # load_config reports the YAML error, naming the file
    for path, port in ((sections, 9001), (flat, 9002)):
        args = build_parser().parse_args(["serve", "--config", str(path)])
        assert load_command_config(ServeConfig, args, "serve").port == port
    args = build_parser().parse_args(["serve", "--config", str(bad)])
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_command_config(ServeConfig, args, "serve")


def test_set_wins_over_the_file_and_fixed_overrides_lose_to_set(tmp_path):
    from llm_i2i.llm.sft import SFTConfig

    f = tmp_path / "run.yaml"
    f.write_text("sft:\n  epochs: 3\n  alpha: 2.0\n")
    args = build_parser().parse_args(["sft", "--role", "generator", "--data", "d", "--out", "o", "--config", str(f),
                                      "--set", "alpha=5.0"])
    cfg = load_command_config(SFTConfig, args, "sft", ["role=discriminator"])
    assert (cfg.epochs, cfg.alpha, cfg.role) == (3, 5.0, "discriminator")


def test_every_command_reads_its_own_section(tmp_path):
    """generate/discriminate read the section named like the command, a backbone the one named like the model."""
    from llm_i2i.commands._common import fit_backbone
    from llm_i2i.data import load_dataset
    from llm_i2i.llm.discriminate import DiscriminateConfig
    from llm_i2i.llm.generate import GenerateConfig

    f = tmp_path / "all.yaml"
    f.write_text("generate:\n  batch_size: 7\ndiscriminate:\n  batch_size: 9\nswing:\n  k: 3\n")
    common = ["--checkpoint", "c", "--data", "d", "--out", "o", "--config", str(f)]
    assert load_command_config(GenerateConfig, build_parser().parse_args(["generate", *common]), "generate").batch_size == 7
    disc = build_parser().parse_args(["discriminate", *common, "--pairs", "p"])
    assert load_command_config(DiscriminateConfig, disc, disc.command).batch_size == 9
    args = build_parser().parse_args(["index", "--interactions", "default", "--config", str(f), "--out", "o"])
    neighbors, info = fit_backbone(args, load_dataset("default").sequences())
    assert info["backbone_config"]["k"] == 3 and neighbors.row(0)[0].size <= 3
