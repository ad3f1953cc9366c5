"""SFT on a URI storage root, for workers on nodes that share no disk: resume states and the finished checkpoint
go through the URI (`sft_resume.RemoteResumeStore`, `SharedWork`), each node keeps only its own scratch."""

import json
import shutil
import threading

import pyarrow.fs as pafs
import pytest
import torch

from llm_i2i.data import load_dataset, save_dataset
from llm_i2i.llm.modeling import ModelConfig, load_checkpoint
from llm_i2i.llm.sft import SFTConfig, run_sft
from llm_i2i.llm.sft_resume import MARKER, RemoteResumeStore
from llm_i2i.uri import filesystem, uri_join

TINY = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, vocab_size=300)
F32 = "torch.float32"


def _listing(fs, path: str) -> list[str]:
    return sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(path)))


def test_two_ranks_on_two_nodes_commit_one_state_through_the_uri(uri_root, tmp_path):
    remote = uri_join(uri_root, "states")
    fs, base = filesystem(remote)
    barrier = threading.Barrier(2)
    weights = {"w": torch.arange(4, dtype=torch.float32)}
    stores = [RemoteResumeStore(remote, tmp_path / f"node{r}", "key", r, 2, barrier.wait) for r in range(2)]

    def commit(rank: int, step: int, best_changed: bool) -> None:
        stores[rank].commit({"global_step": step, "dtype": F32}, weights if rank == 0 else None,
                            ({"0.exp_avg": torch.full((4,), float(rank))}, {"0.step": step}),
                            {"w": weights["w"] * step} if rank == 0 else None, best_changed)

    for step, best_changed in ((1, True), (2, False)):  # the second reuses the first's best weights
        threads = [threading.Thread(target=commit, args=(r, step, best_changed)) for r in range(2)]
        [t.start() for t in threads]
        [t.join(60) for t in threads]
    states = _listing(fs, base)
    assert states == ["state_000000002"]  # the older state is gone
    marker = json.loads(fs.open_input_stream(f"{base}/{states[0]}/{MARKER}").read().decode())
    assert set(marker["files"]) == {"optimizer.rank0.safetensors", "optimizer.rank1.safetensors", "model.safetensors",
                                    "best.safetensors", "state.json"}
    assert not [p for r in range(2) for p in (tmp_path / f"node{r}").rglob("*.safetensors")]  # node scratch emptied

    shutil.rmtree(tmp_path / "node0")  # a restarted worker on a fresh node reads everything from the URI
    for rank in range(2):
        got = RemoteResumeStore(remote, tmp_path / f"fresh{rank}", "key", rank, 2).load(F32)
        assert got.state["global_step"] == 2 and got.optimizer[0]["0.exp_avg"].tolist() == [float(rank)] * 4
        assert got.optimizer[1] == {"0.step": 2} and got.model["w"].tolist() == [0, 1, 2, 3]
        assert (got.best["w"].tolist() == [0, 1, 2, 3]) if rank == 0 else got.best is None  # step 1's best, copied
    with pytest.raises(ValueError, match="world_size"):
        RemoteResumeStore(remote, tmp_path / "solo", "key", 0, 1).load(F32)

    # a remote file cut short (a crashed upload): that state is never read
    opt = f"{base}/{states[0]}/optimizer.rank1.safetensors"
    data = fs.open_input_stream(opt).read()
    with fs.open_output_stream(opt) as f:
        f.write(data[:-8])
    assert RemoteResumeStore(remote, tmp_path / "fresh9", "key", 1, 2).latest() is None


def test_a_run_stopped_on_one_node_resumes_on_another_to_the_same_weights(s3_endpoint, tmp_path, monkeypatch):
    """On S3: stop after 2 steps with node cache A, delete A, finish with node cache B: the state came through the
    URI and the checkpoint equals an uninterrupted run's; the driver's out_dir receives the checkpoint."""
    data = tmp_path / "data"
    save_dataset(load_dataset(None, n_users=120, n_items=30, n_groups=3, seed=1), data)
    cfg = dict(epochs=1, batch_size=16, warmup_steps=1, eval_users=30, checkpoint_every=2, model=ModelConfig(**TINY))
    whole = run_sft(SFTConfig(**cfg), data, tmp_path / "whole")

    shared = s3_endpoint(f"{tmp_path.name}/_work/sft_generator-k")
    fs, work = filesystem(shared)
    out = tmp_path / "driver" / "ckpt"
    monkeypatch.setenv("LLM_I2I_CACHE", str(tmp_path / "nodeA"))
    assert run_sft(SFTConfig(**cfg, stop_after_steps=2), data, out, shared_uri=shared) is None
    assert [s for s in _listing(fs, f"{work}/states") if fs.get_file_info(f"{work}/states/{s}/{MARKER}").size]
    shutil.rmtree(tmp_path / "nodeA")
    monkeypatch.setenv("LLM_I2I_CACHE", str(tmp_path / "nodeB"))
    assert run_sft(SFTConfig(**cfg), data, out, shared_uri=shared) == out
    a, _, ma = load_checkpoint(whole)
    b, _, mb = load_checkpoint(out)
    torch.testing.assert_close(a.state_dict(), b.state_dict())
    assert mb["training"]["resumed_at_steps"] == [2] and mb["run_key"] == ma["run_key"]
    assert _listing(fs, work) == ["model", "run_key.json", "tokenizer"]  # states dropped once the model is in

    # a fresh driver (its out_dir gone) takes the finished checkpoint from the URI instead of training again
    shutil.rmtree(out)
    monkeypatch.setenv("LLM_I2I_CACHE", str(tmp_path / "nodeC"))
    assert run_sft(SFTConfig(**cfg), data, out, shared_uri=shared) == out
    assert load_checkpoint(out)[2] == mb and not (tmp_path / "nodeC").exists()  # fetched, not retrained
