"""The quickstart's claim in CI: on the embedded data, the real pipeline (tiny scratch LLMs, auto cut chosen on
validation) lifts Swing's Recall@10 over the same Swing without augmentation, and the discriminator earns its
place: the full method is at least as good as keeping every generated pair ("w/o discriminator")."""

from __future__ import annotations

import json

import pytest

from llm_i2i.config import from_dict
from llm_i2i.pipeline.config import PipelineConfig
from llm_i2i.llm.runners import Runners
from llm_i2i.pipeline.runner import run_pipeline
from llm_i2i.pipeline.stages import real_llm_ops
from ray_jobs.batch_inference import map_with_engine

TINY_MODEL = {"hidden_size": 64, "num_layers": 1, "num_heads": 2, "intermediate_size": 128, "vocab_size": 500}


def small_config(seed: int, **data) -> PipelineConfig:
    """The quickstart pipeline at a CI size: no Ray, tiny models, Swing only, the two ablation rows that need no
    extra LLM work; the discriminator learns from the generator's own wrong predictions, as in the quickstart."""
    # warmup, dropout and one discriminator positive per user: the settings this CI guard was sized with
    sft = {"model": {**TINY_MODEL, "dropout": 0.0}, "batch_size": 64, "warmup_steps": 30, "eval_users": 300,
           "threads": 2, "seed": seed}
    return from_dict(PipelineConfig, {
        "data": "default", "synthetic": {"n_users": 1200, "n_items": 400, "seed": seed, **data},
        "backbones": ["swing"], "ablations": True, "wo_longtail_loss": False, "score_real": False,
        "sft_generator": {**sft, "epochs": 3, "lr": 0.005}, "sft_discriminator": {**sft, "epochs": 1, "lr": 0.005, "negatives": "generator",
                                                                              "positions_per_user": 1},
        "generate": {"recall_number": 5, "num_actors": 0, "batch_size": 256},
        "discriminate": {"num_actors": 0, "batch_size": 512},
        "generator_alone": False, "discriminator_auc": False,
    })


def test_quickstart_lift_sign_on_a_small_seed(tmp_path):
    report = run_pipeline(small_config(seed=3), str(tmp_path), real_llm_ops(Runners(batch_inference=map_with_engine)))
    swing = report["backbones"]["swing"]
    cut = report["synthetic_pairs"]["cut"]
    assert cut["mode"] == "auto" and cut["selected_on"] == "valid" and not cut["keep_none"]
    assert report["synthetic_pairs"]["kept"] > 0
    assert swing["llm_i2i"]["recall@10"] > swing["baseline"]["recall@10"], json.dumps(swing)
    assert swing["llm_i2i"]["long_tail"]["recall@10"] >= swing["baseline"]["long_tail"]["recall@10"]
    ablations = report["ablations"]
    assert swing["llm_i2i"]["recall@10"] >= ablations["wo_discriminator"]["recall@10"], json.dumps(ablations)
