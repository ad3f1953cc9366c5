"""The whole chain on a tiny synthetic dataset with fake LLM calls: artifacts, skip, resume, report."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from llm_i2i.config import from_dict
from llm_i2i.pipeline.config import STAGES, PipelineConfig
from llm_i2i.pipeline.runner import run_pipeline, run_stage
from tests.pipeline.fakes import FakeLLM

TINY = {"n_users": 150, "n_items": 60, "n_groups": 4}


def tiny_config(**kw) -> PipelineConfig:
    base = dict(synthetic=TINY, backbones=["swing", "bm25"], generate={"recall_number": 4},
                recall_numbers=[1, 4], confidence_levels=[0.5, 1.0], eval_overrides={"ks": [5, 10, 20]})
    return from_dict(PipelineConfig, {**base, **kw})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    fake = FakeLLM()
    report = run_pipeline(tiny_config(wo_longtail_loss=True), str(out), fake.ops())
    return out, fake, report


def test_every_stage_writes_a_manifest(finished):
    out, _, _ = finished
    for stage in STAGES:
        m = json.loads((out / stage / "manifest.json").read_text())
        assert m["stage"] == stage and m["config_hash"] and m["output_hash"]
        for rel, info in m["files"].items():  # the manifest describes exactly what is on disk
            assert (out / stage / rel).stat().st_size == info["bytes"]
    assert json.loads((out / "fuse" / "manifest.json").read_text())["inputs"].keys() == {"prepare", "scored_main", "scored_alpha1"}


def test_discriminator_starts_from_the_generator(finished):
    out, fake, _ = finished
    base = fake.sft_configs["discriminator"]["model"]["base_model"]
    assert Path(base) == out / "sft_generator" / "model"
    inputs = json.loads((out / "sft_discriminator" / "manifest.json").read_text())["inputs"]
    assert inputs.keys() == {"prepare", "init_from"}


def test_report_has_every_row(finished):
    out, fake, r = finished
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["backbones"].keys() == {"swing", "bm25"}
    for b in on_disk["backbones"].values():
        for side in ("baseline", "llm_i2i"):
            assert {"recall@10", "ndcg@10", "long_tail", "non_long_tail"} <= b[side].keys()
    assert {"no_aug", "llm_i2i", "wo_discriminator", "wo_threshold", "wo_generator", "wo_longtail_loss",
            "wo_i2i"} <= on_disk["ablations"].keys()
    assert fake.calls["sft_generator"] == 2  # the α=4 generator and the α=1 one for "w/o long-tail loss"
    assert [row["N"] for row in on_disk["figures"]["recall_number"]] == [1, 4]
    assert on_disk["discriminator_auc"] == 0.5
    syn = on_disk["synthetic_pairs"]
    assert syn["generated"] == 4 * on_disk["dataset"]["users"] and 0 < syn["kept"] < syn["generated"]
    # the no-discriminator variant keeps at least what the thresholded one keeps
    assert on_disk["ablations"]["wo_discriminator"]["fuse"]["synthetic"]["kept"] >= syn["kept"]
    assert set(on_disk["stages"]) == set(STAGES) | {f"{s}_alpha1" for s in ("sft_generator", "generate", "discriminate")} and all(s["seconds"] >= 0 for s in on_disk["stages"].values())
    assert (out / "plots" / "backbones.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "plots" / "confidence.png").exists() and "| swing |" in (out / "report.md").read_text()
    assert (out / "build_index" / "index" / "neighbors.parquet").exists()


def test_rerun_skips_everything(finished):
    out, _, _ = finished
    fake = FakeLLM()
    run_pipeline(tiny_config(wo_longtail_loss=True), str(out), fake.ops())
    assert sum(fake.calls.values()) == 0


def test_changed_fuse_config_redoes_only_downstream(finished, tmp_path):
    import shutil

    out, _, _ = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    fake = FakeLLM()
    from llm_i2i.pipeline.artifacts import ArtifactStore

    store = ArtifactStore(str(copy))
    cfg = tiny_config(wo_longtail_loss=True, fuse={"threshold": 0.9})
    for stage in STAGES:
        run_stage(stage, cfg, str(copy), fake.ops(), store=store)
    status = {h["stage"]: h["status"] for h in store.history}
    assert [s for s in STAGES if status[s] == "skipped"] == ["prepare", "sft_generator", "sft_discriminator", "generate",
                                                              "discriminate"]
    assert status["sft_generator_alpha1"] == status["discriminate_alpha1"] == "skipped"
    assert sum(fake.calls.values()) == 2  # evaluate re-ran: generator-alone eval + AUC, nothing else


def test_crash_in_generate_then_resume(tmp_path):
    """A failure mid-`generate` leaves no finished artifact; the rerun skips the stages before it."""
    out = tmp_path / "run"
    fake = FakeLLM(fail_in="generate")
    with pytest.raises(RuntimeError, match="injected failure"):
        run_pipeline(tiny_config(ablations=False, recall_numbers=[], confidence_levels=[]), str(out), fake.ops())
    assert not (out / "generate").exists()  # the half-written output was never moved into place
    assert (out / "sft_discriminator" / "manifest.json").exists()
    resumed = FakeLLM()
    report = run_pipeline(tiny_config(ablations=False, recall_numbers=[], confidence_levels=[]), str(out), resumed.ops())
    status = {s: v["status_this_run"] for s, v in report["stages"].items()}
    assert status["prepare"] == status["sft_generator"] == status["sft_discriminator"] == "skipped"
    assert status["generate"] == status["evaluate"] == "ran"
    assert resumed.calls["sft_generator"] == resumed.calls["sft_discriminator"] == 0
    assert resumed.calls["generate"] == 1


def test_pyarrow_filesystem_uri(tmp_path):
    """Any pyarrow filesystem URI works as the output root (here file://, through the upload/download path)."""
    out = tmp_path / "remote"
    cfg = tiny_config(backbones=["swing"], ablations=False, recall_numbers=[], confidence_levels=[], score_real=False)
    report = run_pipeline(cfg, out.as_uri(), FakeLLM().ops())
    assert (out / "evaluate" / "manifest.json").exists() and (out / "report.json").exists()
    assert report["backbones"]["swing"]["llm_i2i"]["recall@10"] >= 0
    again = FakeLLM()
    run_pipeline(cfg, out.as_uri(), again.ops())
    assert sum(again.calls.values()) == 0


def test_reused_checkpoint_is_registered_not_trained(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "llm_i2i_manifest.json").write_text('{"role": "generator"}')
    fake = FakeLLM()
    cfg = tiny_config(generator_checkpoint=str(ckpt), backbones=["swing"], ablations=False, recall_numbers=[],
                      confidence_levels=[])
    run_pipeline(cfg, str(tmp_path / "run"), fake.ops(), until="sft_discriminator")
    assert fake.calls["sft_generator"] == 0 and fake.calls["sft_discriminator"] == 1
    info = json.loads((tmp_path / "run" / "sft_generator" / "checkpoint.json").read_text())
    assert Path(info["path"]) == ckpt.resolve() and info["reused"]


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="backbones"):
        tiny_config(backbones=["nope"])
    with pytest.raises(ValueError, match="index_backbone"):
        tiny_config(backbones=["bm25"])
    with pytest.raises(Exception, match="unknown field"):
        from_dict(PipelineConfig, {"fuse": {"thresh": 1}})
