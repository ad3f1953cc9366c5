"""SFT through Ray Train + DeepSpeed ZeRO-2 with 2 CPU workers (gloo), stopped and resumed from its checkpoint."""

import os
from pathlib import Path

import pytest

from llm_i2i.data import load_dataset, save_dataset
from llm_i2i.llm.modeling import ModelConfig, load_checkpoint
from llm_i2i.llm.sft import SFTConfig, run_sft

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def ray_cluster():
    pytest.importorskip("deepspeed")
    import ray

    ext = os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
    ray.init(num_cpus=2, include_dashboard=False, address="local",
             runtime_env={"env_vars": {"TORCH_EXTENSIONS_DIR": ext, "PYTHONPATH": str(REPO)}})
    yield
    ray.shutdown()


def test_two_worker_deepspeed_zero2_trains_stops_and_resumes(ray_cluster, tmp_path):
    data = tmp_path / "syn"
    save_dataset(load_dataset(None, n_users=120, n_items=40, n_groups=4, seed=1), data)
    base = dict(epochs=2, batch_size=32, lr=5e-3, warmup_steps=2, num_workers=2, zero_stage=2, eval_users=60,
                checkpoint_every=2, model=ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, vocab_size=200))
    assert run_sft(SFTConfig(**base, stop_after_steps=1), data, tmp_path / "gen") is None
    assert list((tmp_path / ".gen.resume" / "ray").rglob("checkpoint_*/state.json"))
    out = run_sft(SFTConfig(**base), data, tmp_path / "gen")
    _, _, manifest = load_checkpoint(out)
    training = manifest["training"]
    assert training["deepspeed"] and training["zero_stage"] == 2 and training["num_workers"] == 2
    assert training["resumed_from_epoch"] == 1
    hist = training["history"]
    assert [h["epoch"] for h in hist] == [1, 2] and all(h["world_size"] == 2 for h in hist)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert 0 <= manifest["metrics"]["valid_recall@10"] <= 1
    assert not (tmp_path / ".gen.resume").exists()
