"""Entry points: every stage has a `ray_jobs` module, `llm-i2i run` is registered, Ray fan-out == serial."""

from __future__ import annotations

import importlib
import json

import pytest

from llm_i2i.pipeline.config import STAGES
from llm_i2i.pipeline.jobs import add_pipeline_arguments, pipeline_config
from tests.pipeline.fakes import FakeLLM
from tests.pipeline.test_pipeline import tiny_config


@pytest.mark.parametrize("stage", [*STAGES, "pipeline", "tune_sweep"])
def test_every_stage_has_a_job_module(stage):
    mod = importlib.import_module(f"ray_jobs.{stage}")
    assert callable(getattr(mod, "stage_main", None) or getattr(mod, "main", None))


def test_run_command_is_registered_and_parses(tmp_path):
    import argparse

    from llm_i2i.cli import main

    with pytest.raises(SystemExit) as e:
        main(["run", "--help"])
    assert e.value.code == 0
    p = argparse.ArgumentParser()
    add_pipeline_arguments(p)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("backbones: [swing]\nfuse: {threshold: 0.9}\n")
    cfg = pipeline_config(p.parse_args(["--config", str(cfg_file), "--out", "x", "--data", "some/path",
                                        "--set", "fuse.threshold=0.8"]))
    assert cfg.data == "some/path" and cfg.fuse.threshold == 0.8 and cfg.backbones == ("swing",)


@pytest.mark.ray
def test_ray_fanout_matches_serial(tmp_path):
    """train_i2i through Ray tasks (fractional CPUs) writes the same neighbours as the serial map."""
    import ray

    from llm_i2i.pipeline.jobs import ray_map
    from llm_i2i.pipeline.runner import run_pipeline

    cfg = tiny_config(backbones=["swing", "bm25"], ablations=False, recall_numbers=[], confidence_levels=[],
                      score_real=False)
    run_pipeline(cfg, str(tmp_path / "serial"), FakeLLM().ops(), until="train_i2i")
    ray.init(address="local", num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        run_pipeline(cfg, str(tmp_path / "ray"), FakeLLM().ops(), map_fn=ray_map(0.5), until="train_i2i")
    finally:
        ray.shutdown()
    a = json.loads((tmp_path / "serial" / "train_i2i" / "manifest.json").read_text())
    b = json.loads((tmp_path / "ray" / "train_i2i" / "manifest.json").read_text())
    neighbor_files = {k: v["sha256"] for k, v in a["files"].items() if k.endswith("neighbors.parquet")}
    assert len(neighbor_files) == 4
    assert neighbor_files == {k: v["sha256"] for k, v in b["files"].items() if k.endswith("neighbors.parquet")}
