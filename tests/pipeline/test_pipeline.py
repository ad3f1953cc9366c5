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
    assert on_disk["discriminator_auc"] == on_disk["discriminator"]["auc"]["random"] == 0.875  # the fake's scores
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


def test_execution_knobs_reuse_every_stage_and_a_result_knob_does_not(finished, tmp_path):
    """More actors, threads or a larger batch say how a stage runs, not what it produces: a cluster run that
    scales out reuses every finished artifact. A knob that changes the output (recall_number) still redoes it."""
    import shutil

    out, _, _ = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    execution = {"batch_size": 3, "num_actors": 2, "actor_num_cpus": 0.25, "actor_start_timeout_s": 5,
                 "torch_threads": 1}
    sft = {"threads": 1, "checkpoint_every": 7, "eval_batch_size": 5, "eval_batch_tokens": 99, "cpus_per_worker": 0.25}
    fake = FakeLLM()
    run_pipeline(tiny_config(wo_longtail_loss=True, generate={"recall_number": 4, **execution},
                             discriminate=execution, sft_generator=sft, sft_discriminator=sft), str(copy), fake.ops())
    assert sum(fake.calls.values()) == 0
    run_pipeline(tiny_config(wo_longtail_loss=True, generate={"recall_number": 5}), str(copy), fake.ops())
    assert fake.calls["generate"] >= 1 and fake.calls["sft_generator"] == 0


TIMED_FILES = {"fits.json", "index/manifest.json", "metrics.json"}  # hold fit/build/eval seconds or a build time


def _stage_files(out: Path, stages) -> dict[str, dict[str, str]]:
    """Each stage's files and their SHA-256, but for those that record timings."""
    return {s: {rel: f["sha256"] for rel, f in json.loads((out / s / "manifest.json").read_text())["files"].items()
                if rel not in TIMED_FILES} for s in stages}


def test_sigkill_in_generate_then_resume_matches_an_uninterrupted_run(tmp_path):
    """A pipeline process SIGKILLed mid-`generate` (no `finally`, no cleanup) leaves no finished generate artifact;
    the rerun skips the finished stages, cleans up, and ends with the same artifacts as an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cfg = dict(synthetic=TINY, backbones=["swing"], generate={"recall_number": 4}, ablations=False,
               eval_overrides={"ks": [5, 10]})
    reference = tmp_path / "reference"
    run_pipeline(from_dict(PipelineConfig, cfg), str(reference), FakeLLM().ops())

    out, ready = tmp_path / "run", tmp_path / "ready"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "tests.pipeline.fakes", json.dumps(cfg), str(out), str(ready)],
                            cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), f"the pipeline subprocess never reached generate (exit code {proc.poll()})"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "generate").exists()  # the half-written output was never moved into place
    assert list(out.glob(".generate.*.tmp"))  # ... and nothing cleaned it up: the kill was real
    assert (out / "sft_discriminator" / "manifest.json").exists()

    resumed = FakeLLM()
    report = run_pipeline(from_dict(PipelineConfig, cfg), str(out), resumed.ops())
    status = {s: v["status_this_run"] for s, v in report["stages"].items()}
    assert status["prepare"] == status["sft_generator"] == status["sft_discriminator"] == "skipped"
    assert status["generate"] == status["evaluate"] == "ran"
    assert resumed.calls["sft_generator"] == resumed.calls["sft_discriminator"] == 0
    assert resumed.calls["generate"] == 1
    assert not list(out.glob(".*.tmp"))  # the killed run's leftovers are gone
    # the stages that ran after the kill wrote exactly what the uninterrupted run wrote (the fake SFT checkpoints
    # name their own out dir, so those two are compared through what they produced)
    after = [s for s in STAGES if not s.startswith("sft_")]
    assert _stage_files(out, after) == _stage_files(reference, after)
    metrics = [json.loads((d / "evaluate" / "metrics.json").read_text()) for d in (out, reference)]
    for m in metrics:
        m.pop("generator_alone_seconds")
    assert metrics[0] == metrics[1]


def test_edited_reused_checkpoint_reruns_downstream(tmp_path):
    """An in-place edit of a reused checkpoint (same size, same mtime) re-registers it and re-runs what used it."""
    import os

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "llm_i2i_manifest.json").write_text('{"role": "generator"}')
    weights = ckpt / "model.safetensors"
    weights.write_bytes(b"\x00" * 64)
    cfg = tiny_config(generator_checkpoint=str(ckpt), backbones=["swing"], ablations=False, recall_numbers=[],
                      confidence_levels=[], score_real=False)
    out = str(tmp_path / "run")
    run_pipeline(cfg, out, FakeLLM().ops(), until="generate")
    unchanged = FakeLLM()
    run_pipeline(cfg, out, unchanged.ops(), until="generate")
    assert unchanged.calls["generate"] == 0

    st = weights.stat()
    weights.write_bytes(b"\x01" * 64)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    edited = FakeLLM()
    run_pipeline(cfg, out, edited.ops(), until="generate")
    assert edited.calls["generate"] == 1


def _write_data(path: Path, seed: int) -> Path:
    from llm_i2i.data import load_dataset, save_dataset

    return save_dataset(load_dataset("default", **TINY, seed=seed), path)


def test_changed_data_retrains_sft_unchanged_data_does_not(tmp_path):
    """Same --out, new data in the same place: SFT trains again on the new data instead of shipping the model of
    the old data from its work directory; the same data again: nothing re-runs."""
    data, out = tmp_path / "data", str(tmp_path / "run")
    _write_data(data, seed=1)
    cfg = tiny_config(data=str(data), backbones=["swing"], ablations=False, recall_numbers=[], confidence_levels=[])
    first = FakeLLM()
    run_pipeline(cfg, out, first.ops(), until="sft_discriminator")
    assert first.calls["sft_generator"] == 1

    same = FakeLLM()
    run_pipeline(cfg, out, same.ops(), until="sft_discriminator")
    assert sum(same.calls.values()) == 0

    _write_data(data, seed=2)
    changed = FakeLLM()
    run_pipeline(cfg, out, changed.ops(), until="sft_discriminator")
    assert changed.calls["sft_generator"] == changed.calls["sft_discriminator"] == 1
    assert changed.calls["sft_reused_generator"] == 0
    import hashlib

    new_data = hashlib.sha256((Path(out) / "prepare" / "dataset" / "interactions.parquet").read_bytes()).hexdigest()
    for role in ("generator", "discriminator"):
        shipped = json.loads((Path(out) / f"sft_{role}" / "model" / "llm_i2i_manifest.json").read_text())
        assert shipped["trained_on"] == new_data
    work = sorted(p.name for p in (Path(out) / "_work").iterdir() if p.name.startswith("sft_generator"))
    assert len(work) == 1  # the old data's work directory was pruned


def test_pyarrow_filesystem_uri(tmp_path, monkeypatch):
    """Any pyarrow filesystem URI works as the output root (here file://, through the upload/download path)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the local cache of remote roots
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
