"""SFT through Ray Train + DeepSpeed ZeRO-2 with 2 workers on a cluster that declares GPUs it does not have:
the workers hold GPU resources, fall back to CPU (gloo), and a stopped or killed run resumes to the weights of
an uninterrupted one."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from llm_i2i.data import load_dataset, save_dataset
from llm_i2i.llm.modeling import ModelConfig, load_checkpoint
from llm_i2i.llm.sft import SFTConfig, run_sft

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]
BASE = dict(epochs=2, batch_size=32, lr=5e-3, warmup_steps=2, num_workers=2, zero_stage=2, eval_users=60,
            checkpoint_every=2, patience=0)
MODEL = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, vocab_size=200)


@pytest.fixture(scope="module")
def ray_cluster():
    pytest.importorskip("deepspeed")
    import ray

    ext = os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, address="local",
             runtime_env={"env_vars": {"TORCH_EXTENSIONS_DIR": ext, "PYTHONPATH": str(REPO)}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("ray_data") / "syn"
    save_dataset(load_dataset(None, n_users=120, n_items=40, n_groups=4, seed=1), d)
    return d


def _run(data, out, **kw):
    from ray_jobs.train_llm import RaySFTRunner

    return run_sft(SFTConfig(**BASE, **kw, model=ModelConfig(**MODEL)), data, out, RaySFTRunner())


@pytest.fixture(scope="module")
def uninterrupted(ray_cluster, data, tmp_path_factory):
    return _run(data, tmp_path_factory.mktemp("ray_full") / "gen")


def _assert_same_run(reference, resumed):
    a, _, ma = load_checkpoint(reference)
    b, _, mb = load_checkpoint(resumed)
    torch.testing.assert_close(a.state_dict(), b.state_dict())
    assert [h["train_loss"] for h in ma["training"]["history"]] == pytest.approx(
        [h["train_loss"] for h in mb["training"]["history"]], rel=1e-5)
    return mb["training"]


def test_workers_hold_declared_gpus_and_fall_back_to_cpu(uninterrupted):
    manifest = load_checkpoint(uninterrupted)[2]
    assert len(manifest["ray_rank0"]["gpu_ids"]) == 1  # Ray gave the worker one of the declared GPUs
    training = manifest["training"]
    assert training["deepspeed"] and training["zero_stage"] == 2 and training["num_workers"] == 2
    assert training["gpu_requested"] and training["device"] == "cpu"  # given a GPU CUDA cannot use
    hist = training["history"]
    assert [h["epoch"] for h in hist] == [1, 2] and all(h["world_size"] == 2 for h in hist)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]


def test_two_worker_deepspeed_zero2_stops_and_resumes_to_the_uninterrupted_weights(uninterrupted, data, tmp_path):
    assert _run(data, tmp_path / "gen", stop_after_steps=3) is None
    assert list((tmp_path / ".gen.resume" / "states").glob("state_*/COMPLETE.json"))
    out = _run(data, tmp_path / "gen")
    training = _assert_same_run(uninterrupted, out)
    assert training["resumed_at_steps"] == [3]
    assert 0 <= load_checkpoint(out)[2]["metrics"]["valid_recall@10"] <= 1
    assert not (tmp_path / ".gen.resume").exists()


@pytest.mark.slow
def test_a_killed_train_worker_is_restarted_and_resumes_to_the_uninterrupted_weights(uninterrupted, data, tmp_path):
    """SIGKILL one Ray Train worker after the first committed resume state; Ray Train restarts the group, which
    continues from the newest complete state."""
    import psutil

    result: dict = {}
    fit = threading.Thread(target=lambda: result.update(out=_run(data, tmp_path / "gen")))
    fit.start()
    states, deadline = tmp_path / ".gen.resume" / "states", time.monotonic() + 600
    while not list(states.glob("state_*/COMPLETE.json")):
        assert fit.is_alive() and time.monotonic() < deadline, "the run ended before its first commit"
        time.sleep(0.02)
    # this test's Ray cluster was started by this process, so its workers are among our descendants
    workers = [p for p in psutil.Process().children(recursive=True) if "RayTrainWorker" in " ".join(p.cmdline())]
    assert len(workers) == 2, [p.cmdline() for p in workers]
    os.kill(workers[-1].pid, signal.SIGKILL)
    fit.join()
    training = _assert_same_run(uninterrupted, result["out"])
    assert training["resumed_at_steps"], "the restarted workers should have resumed from a committed state"


def test_lora_under_deepspeed_zero2_moves_only_adapted_weights_and_resumes(uninterrupted, data, tmp_path):
    """The discriminator with LoRA from the generator on 2 DeepSpeed workers: ZeRO-2 partitions the adapters alone,
    the merged checkpoint differs from the generator in the projections only, and a stopped run resumes to the
    uninterrupted run's weights."""
    from ray_jobs.train_llm import RaySFTRunner

    lora = ModelConfig(**MODEL, base_model=str(uninterrupted), lora_rank=4, dropout=0.0)
    cfg = dict(BASE, role="discriminator", epochs=1, model=lora)
    full = run_sft(SFTConfig(**cfg), data, tmp_path / "full", RaySFTRunner())
    assert run_sft(SFTConfig(**cfg, stop_after_steps=2), data, tmp_path / "cut", RaySFTRunner()) is None
    training = _assert_same_run(full, run_sft(SFTConfig(**cfg), data, tmp_path / "cut", RaySFTRunner()))
    assert training["deepspeed"] and training["resumed_at_steps"] == [2]
    gen = load_checkpoint(uninterrupted)[0].state_dict()
    for k, v in load_checkpoint(full)[0].state_dict().items():
        assert torch.equal(v, gen[k]) == (not k.endswith("_proj.weight")), k


@pytest.mark.parametrize("asked, workers, gpu, free, want",
                         [(None, 1, False, 2.0, 2.0), (None, 2, False, 5.0, 2.0), (None, 1, False, 1.5, 1.0),
                          (None, 2, False, 1.0, 0.5), (None, 2, True, 16.0, 0.5), (0.25, 1, False, 8.0, 0.25)])
def test_a_cpu_worker_reserves_its_share_of_the_free_cpus_so_ray_gives_it_as_many_threads(
        monkeypatch, asked, workers, gpu, free, want):
    """Ray starts a worker with as many torch threads as whole CPUs it reserved: a CPU worker takes an equal,
    whole share of the free CPUs; one beside a GPU, or with too few free, half a CPU; an explicit value wins."""
    import ray

    from ray_jobs.train_llm import worker_cpus

    monkeypatch.setattr(ray, "available_resources", lambda: {"CPU": free})
    assert worker_cpus(asked, workers, gpu) == want
