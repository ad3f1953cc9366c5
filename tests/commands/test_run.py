"""`llm-i2i run` picks its config: the quickstart's for the embedded data, the library defaults for `--data DIR`."""

from pathlib import Path

from llm_i2i.commands.run import default_config
from llm_i2i.llm.sft_config import SFTConfig
from llm_i2i.pipeline.config import PipelineConfig


def test_the_quickstart_config_is_for_the_embedded_data_only():
    quickstart = default_config(None, None)
    assert quickstart is not None and Path(quickstart).name == "quickstart.yaml"
    assert default_config(None, "default") == quickstart
    assert default_config(None, "../shared/data/Beauty") is None  # a new dataset: library defaults
    assert default_config("mine.yaml", None) == "mine.yaml"  # an explicit config always wins


def test_library_defaults_adapt_the_sft_budget_and_the_cut():
    cfg = PipelineConfig()
    gen, disc = cfg.sft_generator, cfg.sft_discriminator
    # the generator: early stopping within an lr schedule that ends annealed (its length is `epochs`)
    assert gen.early_stop_patience > 0 and gen.epoch_budget > 3 * gen.early_stop_patience
    # the discriminator starts from the fine-tuned generator: one epoch, the lr annealed within it
    assert disc.epoch_budget == 1 and disc.early_stop_patience < gen.early_stop_patience
    assert SFTConfig(role="discriminator", epochs=3).epoch_budget == 3
    assert gen.resolved().epochs == 10 and disc.resolved().epochs == 1
    # the generator's epoch is chosen on every validation user (a 4000-user NDCG@10 stopped it on noise)
    assert cfg.sft_generator.selection_users is None and cfg.sft_discriminator.selection_users == 4000
    assert SFTConfig(eval_users=300).selection_users == 300 and SFTConfig(eval_users=0).selection_users is None
    assert cfg.fuse.threshold == "auto"
    assert SFTConfig().epochs == cfg.sft_generator.epochs
