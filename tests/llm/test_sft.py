"""SFT data, batching, AUC, the plain training loop (quality on a learnable synthetic set) and resume."""

import json
import os
import time
from collections import Counter

import numpy as np
import pytest
import torch

from llm_i2i.data import leave_one_out, load_dataset, save_dataset
from llm_i2i.llm.modeling import ModelConfig, load_checkpoint
from llm_i2i.llm.sft import SFTConfig, discriminator_auc, evaluate_generator, roc_auc, run_sft
from llm_i2i.llm.sft_data import discriminator_pairs, epoch_batches, generator_examples
from llm_i2i.llm.tokenizer import build_tokenizer, item_vocabulary
from llm_i2i.eval.protocol import EvalConfig

TINY = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, vocab_size=300)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data") / "syn"
    save_dataset(load_dataset(None, n_users=300, n_items=60, n_groups=4, noise_rate=0.0, p_chain=0.9, seed=3), d)
    return d


@pytest.fixture(scope="module")
def split(dataset_dir):
    return leave_one_out(load_dataset(dataset_dir).sequences())


def test_generator_examples_cover_exactly_the_train_split(dataset_dir, split):
    ds = load_dataset(dataset_dir)
    tok = build_tokenizer(ds.items, vocab_size=300)
    ex = generator_examples(split.train, tok, max_items=4)
    assert ex.report["users_split_into_chunks"] > 0
    got = Counter(c for lab in ex.labels for c in lab.tolist() if c >= 0)
    want = Counter(split.train.items.tolist())  # columns == dense items (both sorted by item id)
    assert got == want
    ids, _ = item_vocabulary(tok)
    assert np.array_equal(ids, split.train.item_ids)


def test_discriminator_pairs_are_observed_or_unseen(split):
    rng = np.random.default_rng(0)
    train = split.train
    hist, cand, label, _ = discriminator_pairs(train, positions_per_user=2, neg_ratio=3, rng=rng)
    assert (label == 0).sum() == 3 * (label == 1).sum()
    owner = {}
    for u in range(train.n_users):
        s = train.user(u)
        for t in range(1, len(s)):
            owner.setdefault(tuple(s[:t].tolist()), []).append((u, s[t]))
    for h, c, y in zip(hist, cand, label):
        users = owner[tuple(h.tolist())]
        if y == 1:
            assert any(c == nxt for _, nxt in users)
        else:
            assert any(c not in set(train.user(u).tolist()) for u, _ in users)


def test_discriminator_negatives_come_from_their_pool(split):
    """`generator` negatives are the generator's top predictions the user never touched (else counted and random);
    `random+hard` draws about half from the Swing pool; an unknown or repeated source is refused."""
    train = split.train
    order = np.argsort(-train.item_counts(), kind="stable")  # a fake generator: the most popular items for everyone
    top = lambda histories: np.tile(order[:2], (len(histories), 1))
    hist, cand, label, fell_back = discriminator_pairs(train, 2, 2, np.random.default_rng(0), "generator",
                                                       generator_top=top)
    user_of = {}
    for u in range(train.n_users):
        for t in range(1, len(train.user(u))):
            user_of.setdefault(tuple(train.user(u)[:t].tolist()), set()).add(u)
    in_pool = 0
    for h, c, y in zip(hist, cand, label):
        if y == 0:
            assert any(c not in set(train.user(u).tolist()) for u in user_of[tuple(h.tolist())])
            in_pool += int(c in order[:2])
    assert in_pool + fell_back == (label == 0).sum() and in_pool > fell_back > 0

    class Pool:  # a fake Swing: every item's neighbours are the last 5 items of the catalogue
        def row(self, item):
            return np.arange(train.n_items - 5, train.n_items), None

    _, cand, label, _ = discriminator_pairs(train, 2, 4, np.random.default_rng(0), "random+hard", hard_neighbors=Pool())
    from_pool = (cand[label == 0] >= train.n_items - 5).mean()
    assert 0.3 < from_pool < 0.7
    for bad in ("swing", "random+random", ""):
        with pytest.raises(ValueError, match="negatives"):
            discriminator_pairs(train, 2, 1, np.random.default_rng(0), bad)
    with pytest.raises(ValueError, match="generator_top"):
        discriminator_pairs(train, 2, 1, np.random.default_rng(0), "generator")


def test_popular_negatives_take_popularity_away_as_a_cue(split):
    """Positives are drawn as interactions are, so they lean popular: uniform negatives let a model tell them apart by
    popularity alone, negatives drawn as often as items occur in train do not (and the user never touched them)."""
    train = split.train
    counts = train.item_counts()
    auc = {}
    for source in ("random", "popular"):
        hist, cand, label, fell_back = discriminator_pairs(train, 3, 2, np.random.default_rng(0), source)
        auc[source] = roc_auc(label, counts[cand] + np.random.default_rng(1).random(len(cand)))
        assert fell_back == 0
        owner_items = {}
        for u in range(train.n_users):
            for t in range(1, len(train.user(u))):
                owner_items.setdefault(tuple(train.user(u)[:t].tolist()), []).append(set(train.user(u).tolist()))
        assert all(any(c not in seen for seen in owner_items[tuple(h.tolist())])
                   for h, c, y in zip(hist, cand, label) if y == 0)
    assert auc["random"] > 0.6 and abs(auc["popular"] - 0.5) < 0.05, auc


@pytest.mark.parametrize("world", [1, 2, 3])
def test_epoch_batches_partition(world):
    lengths = np.random.default_rng(0).integers(1, 40, 101)
    per_rank = [epoch_batches(lengths, 8, seed=1, epoch=2, rank=r, world=world) for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1
    flat = np.concatenate([np.concatenate(b) for b in per_rank])
    assert len(flat) == len(set(flat.tolist()))
    assert len(flat) >= 101 - 8 * (world - 1)
    assert [b.tolist() for b in epoch_batches(lengths, 8, 1, 2)] == [b.tolist() for b in epoch_batches(lengths, 8, 1, 2)]


def test_roc_auc_against_pairwise_brute_force():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    s = rng.integers(0, 5, 60).astype(float)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    ref = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert abs(roc_auc(y, s) - ref) < 1e-12


@pytest.fixture(scope="module")
def generator_ckpt(dataset_dir, tmp_path_factory):
    cfg = SFTConfig(epochs=3, lr=5e-3, batch_size=32, warmup_steps=5, model=ModelConfig(**TINY))
    return run_sft(cfg, dataset_dir, tmp_path_factory.mktemp("gen") / "ckpt")


def test_generator_learns_and_checkpoint_is_complete(generator_ckpt, dataset_dir, split):
    model, tok, manifest = load_checkpoint(generator_ckpt)
    assert manifest["role"] == "generator" and manifest["item_ids"] == split.full.item_ids.tolist()
    assert manifest["item_tokens"] == {"new_item_tokens": split.full.n_items, "init": "text_pca"}  # the scratch default
    m = manifest["metrics"]
    assert {"valid_recall@10", "valid_ndcg@10", "valid_long_tail_recall@10"} <= m.keys()
    # the synthetic set follows item chains with p=0.9: a trained generator is far above random (10/60)
    assert m["valid_recall@10"] > 2 * 10 / split.full.n_items
    losses = [h["train_loss"] for h in manifest["training"]["history"]]
    assert losses[-1] < losses[0]
    assert 1 <= manifest["training"]["threads"] <= os.cpu_count()  # what the tokens/s was measured with
    test = evaluate_generator(generator_ckpt, dataset_dir, EvalConfig(split="test", ks=(10,)), exclude_history=False)
    assert test["users_evaluated"] == int((split.targets("test") >= 0).sum())
    assert 0 < test["recall@10"] <= 1


def test_run_sft_is_idempotent(generator_ckpt, dataset_dir):
    before = (generator_ckpt / "model.safetensors").stat().st_mtime_ns
    cfg = SFTConfig(epochs=3, lr=5e-3, batch_size=32, warmup_steps=5, model=ModelConfig(**TINY))
    assert run_sft(cfg, dataset_dir, generator_ckpt) == generator_ckpt
    assert (generator_ckpt / "model.safetensors").stat().st_mtime_ns == before


def test_lora_discriminator_moves_only_its_adapted_weights(generator_ckpt, dataset_dir, tmp_path):
    """The discriminator tuned with LoRA from the generator: a plain checkpoint whose embeddings and norms are the
    generator's, whose projections moved, and whose training loss went down."""
    cfg = SFTConfig(role="discriminator", epochs=2, lr=1e-2, batch_size=32, warmup_steps=2, eval_users=100,
                    model=ModelConfig(**TINY, base_model=str(generator_ckpt), lora_rank=4, dropout=0.0))
    ckpt = run_sft(cfg, dataset_dir, tmp_path / "disc")
    disc, _, manifest = load_checkpoint(ckpt)
    gen, _, _ = load_checkpoint(generator_ckpt)
    g = gen.state_dict()
    for k, v in disc.state_dict().items():
        assert torch.equal(v, g[k]) == (not k.endswith("_proj.weight")), k
    assert manifest["sft_config"]["model"]["lora_rank"] == 4
    losses = [h["train_loss"] for h in manifest["training"]["history"]]
    assert losses[-1] < losses[0]


KILL_BASE = dict(epochs=2, lr=5e-3, batch_size=64, warmup_steps=2, eval_users=50, checkpoint_every=2, patience=0,
                 model=ModelConfig(**TINY))

# The child trains the same run and parks itself at a fault point (the marker file tells the parent where), so the
# parent's SIGKILL lands there: inside an optimizer step, or between two files of a resume-state commit.
CHILD = """
import os, sys, time
from pathlib import Path
import torch
from llm_i2i.llm import sft_resume
from llm_i2i.llm.modeling import ModelConfig
from llm_i2i.llm.sft import SFTConfig, run_sft

where, marker, data, out, base = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4], eval(sys.argv[5])
calls = {"step": 0, "save": 0}

def park():
    marker.write_text(where)
    time.sleep(600)

if where == "mid_step":
    step = torch.optim.AdamW.step
    def step_then_park(self, *a, **k):
        calls["step"] += 1
        if calls["step"] == 7:  # after the commits at steps 2, 4 and 6; killed before the 7th update lands
            park()
        return step(self, *a, **k)
    torch.optim.AdamW.step = step_then_park
else:
    save = sft_resume._save_tensors
    def save_then_park(tensors, path, metadata=None):
        save(tensors, path, metadata)
        calls["save"] += 1
        if calls["save"] == 4:  # the second commit: its optimizer file written, the model file not yet
            park()
    sft_resume._save_tensors = save_then_park
run_sft(SFTConfig(**base), data, out)
"""


@pytest.fixture(scope="module")
def uninterrupted(dataset_dir, tmp_path_factory):
    return run_sft(SFTConfig(**KILL_BASE), dataset_dir, tmp_path_factory.mktemp("full") / "full")


@pytest.mark.parametrize("where", ["mid_step", "mid_save"])
def test_killed_run_resumes_to_the_same_weights(where, uninterrupted, dataset_dir, tmp_path):
    """SIGKILL a training subprocess inside a step, or halfway through writing a resume state; the rerun resumes
    from the newest complete state and ends with the uninterrupted run's weights and loss curve."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from llm_i2i.llm.sft_resume import ResumeStore

    repo = Path(__file__).resolve().parents[2]
    out, marker = tmp_path / "cut", tmp_path / "parked"
    base = {**KILL_BASE, "model": ModelConfig(**TINY)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, where, str(marker), str(dataset_dir), str(out), repr(base)],
                             env={**os.environ, "PYTHONPATH": str(repo)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the child never reached its fault point"
        time.sleep(0.1)
    child.send_signal(signal.SIGKILL)
    assert child.wait(30) == -signal.SIGKILL
    states = tmp_path / ".cut.resume" / "states"
    latest = ResumeStore(states, "").latest()
    committed = json.loads((latest / "state.json").read_text())
    if where == "mid_step":
        assert committed["global_step"] == 6
    else:
        assert [p.name for p in states.glob(".state_*.tmp")], "the kill should leave a half-written state"
        assert committed["global_step"] == 2  # the half-written one (step 4) is ignored
    resumed = run_sft(SFTConfig(**KILL_BASE), dataset_dir, out)
    assert resumed is not None and not (tmp_path / ".cut.resume").exists()
    a, _, ma = load_checkpoint(uninterrupted)
    b, _, mb = load_checkpoint(resumed)
    torch.testing.assert_close(a.state_dict(), b.state_dict())
    assert mb["training"]["resumed_at_steps"] == [committed["global_step"]]
    assert ma["training"]["global_step"] == mb["training"]["global_step"]
    for ha, hb in zip(ma["training"]["history"], mb["training"]["history"], strict=True):
        assert ha["train_loss"] == pytest.approx(hb["train_loss"], rel=1e-5)
        assert ha["valid_metric"] == pytest.approx(hb["valid_metric"], rel=1e-5)


def test_reuse_and_resume_are_keyed_by_data_content(tmp_path):
    """A finished run is reused only for the same config AND data bytes; a missing dataset is an error, not a
    cached checkpoint; a resume state of other data is discarded, not resumed."""
    from llm_i2i.data.schema import DataError

    data, out = tmp_path / "data", tmp_path / "ckpt"
    save_dataset(load_dataset(None, n_users=120, n_items=30, n_groups=3, seed=1), data)
    cfg = dict(epochs=1, batch_size=64, warmup_steps=1, eval_users=30, model=ModelConfig(**TINY))
    assert run_sft(SFTConfig(**cfg), data, out) == out
    first = json.loads((out / "llm_i2i_manifest.json").read_text())
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    with pytest.raises(DataError, match="not found"):
        run_sft(SFTConfig(**cfg), tmp_path / "no_such_data", out)
    assert run_sft(SFTConfig(**cfg), data, out) == out
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime  # same config and data: reused
    save_dataset(load_dataset(None, n_users=120, n_items=30, n_groups=3, seed=2), data)  # same path, new bytes
    assert run_sft(SFTConfig(**cfg, stop_after_steps=1), data, out) is None  # a resume state of the new data
    save_dataset(load_dataset(None, n_users=120, n_items=30, n_groups=3, seed=3), data)  # ... changed again
    assert run_sft(SFTConfig(**cfg), data, out) == out
    second = json.loads((out / "llm_i2i_manifest.json").read_text())
    assert second["data_fingerprint"] != first["data_fingerprint"] and second["run_key"] != first["run_key"]
    assert second["config_hash"] == first["config_hash"]
    assert second["training"]["resumed_at_steps"] == []  # the other data's resume state was not resumed


def test_early_stopping_keeps_the_best_epoch(dataset_dir, tmp_path, monkeypatch):
    """Validation scores 0.1, 0.3, 0.2, 0.25: with patience 2 training stops after epoch 4 of 10 and the
    checkpoint holds epoch 2's weights."""
    from llm_i2i.llm import sft_trainer
    from llm_i2i.llm.sft_resume import weights_of

    scores, seen = iter([0.1, 0.3, 0.2, 0.25]), []

    def scripted(cfg, model, prep, max_users):
        seen.append(weights_of(model))
        return "ndcg@10", next(scores)

    monkeypatch.setattr(sft_trainer, "select_metric", scripted)
    cfg = SFTConfig(epochs=10, patience=2, batch_size=64, warmup_steps=1, eval_users=30, model=ModelConfig(**TINY))
    manifest = json.loads((run_sft(cfg, dataset_dir, tmp_path / "es") / "llm_i2i_manifest.json").read_text())
    tr = manifest["training"]
    assert [h["epoch"] for h in tr["history"]] == [1, 2, 3, 4] and tr["stopped_early"] and tr["best_epoch"] == 2
    model, _, _ = load_checkpoint(tmp_path / "es")
    torch.testing.assert_close(weights_of(model), seen[1])
    assert not torch.equal(seen[1]["model.embed_tokens.weight"], seen[3]["model.embed_tokens.weight"])


def test_training_device_falls_back_to_cpu_when_the_gpu_is_unusable(caplog):
    from llm_i2i.llm.sft_trainer import usable_device

    if torch.cuda.is_available():
        pytest.skip("this machine has a usable GPU")
    with caplog.at_level("WARNING", logger="llm_i2i"):
        assert usable_device(True).type == "cpu"
    assert "CUDA is not usable" in caplog.text and "training on CPU" in caplog.text
    assert usable_device(False).type == "cpu"


def test_distributed_sft_needs_a_runner_and_zero3_is_refused(dataset_dir, tmp_path):
    with pytest.raises(ValueError, match="Ray runner"):
        run_sft(SFTConfig(num_workers=2, model=ModelConfig(**TINY)), dataset_dir, tmp_path / "x")
    with pytest.raises(ValueError, match="zero_stage=3"):
        SFTConfig(zero_stage=3).validate()
    with pytest.raises(ValueError, match="eval_users"):
        SFTConfig(eval_users=-1).validate()
    with pytest.raises(ValueError, match="eval_batch_tokens"):
        SFTConfig(eval_batch_tokens=0).validate()


def test_run_hash_sees_the_role_defaults():
    # a role default written out is the same run; another value is not, even where the field itself stays None
    assert SFTConfig().run_hash() == SFTConfig(epochs=10, patience=SFTConfig().early_stop_patience,
                                               eval_users=0).run_hash()
    # the item init too: "auto" written out as what it means on the scratch model
    assert SFTConfig().run_hash() == SFTConfig(model=ModelConfig(item_init="text_pca")).run_hash()
    assert SFTConfig().run_hash() != SFTConfig(model=ModelConfig(item_init="random")).run_hash()
    assert SFTConfig().run_hash() != SFTConfig(patience=2).run_hash()
    assert SFTConfig().run_hash() != SFTConfig(epochs=30).run_hash()  # the lr schedule's length
    disc = SFTConfig(role="discriminator")
    assert disc.resolved().eval_users == disc.selection_users and disc.resolved().patience == disc.early_stop_patience
    assert disc.run_hash() == SFTConfig(role="discriminator", epochs=1).run_hash()


def test_discriminator_from_generator_learns(generator_ckpt, dataset_dir, tmp_path):
    """The discriminator starts from the generator checkpoint (same tokenizer, item embeddings) and separates
    held-out next items from random items well above chance (0.5)."""
    cfg = SFTConfig(role="discriminator", epochs=4, lr=5e-3, batch_size=32, warmup_steps=5, positions_per_user=4,
                    model=ModelConfig(**{**TINY, "base_model": str(generator_ckpt)}))
    ckpt = run_sft(cfg, dataset_dir, tmp_path / "disc")
    manifest = json.loads((ckpt / "llm_i2i_manifest.json").read_text())
    assert manifest["sft_config"]["model"]["base_model"] == str(generator_ckpt)
    # its item tokens come from the generator, whatever model.item_init says, and the manifest says so
    assert manifest["item_tokens"] == {"new_item_tokens": 0, "init": "inherited from model.base_model"}
    assert manifest["metrics"]["valid_auc_random"] > 0.65
    auc_hard = discriminator_auc(ckpt, dataset_dir, negatives="hard")
    assert 0.0 <= auc_hard <= 1.0


def test_cli_sft_writes_checkpoint(dataset_dir, tmp_path):
    from llm_i2i.cli import main

    out = tmp_path / "cli"
    rc = main(["sft", "--role", "generator", "--data", str(dataset_dir), "--out", str(out), "--set", "epochs=1",
               "--set", "model.hidden_size=32", "--set", "model.num_layers=1", "--set", "model.num_heads=2",
               "--set", "model.vocab_size=300", "--set", "eval_users=50"])
    assert rc == 0
    manifest = json.loads((out / "llm_i2i_manifest.json").read_text())
    assert manifest["role"] == "generator" and manifest["sft_config"]["model"]["hidden_size"] == 32


def test_pipeline_evaluation_runs_through_the_runner(generator_ckpt, dataset_dir):
    """The evaluate stage loads the model where the runner says (a Ray worker on a cluster), not on the driver."""
    from llm_i2i.llm.runners import Runners
    from llm_i2i.llm.sft import LocalRunner
    from llm_i2i.pipeline.stages import real_llm_ops
    from ray_jobs.batch_inference import map_with_engine

    calls = []

    class Recording(LocalRunner):
        def call(self, fn, *args, **kwargs):
            calls.append(fn.__name__)
            return super().call(fn, *args, **kwargs)

    ops = real_llm_ops(Runners(batch_inference=map_with_engine, sft=Recording()))
    m = ops.evaluate_generator(generator_ckpt, dataset_dir, EvalConfig(split="test", ks=(10,)), {"max_users": 50})
    assert calls == ["evaluate_generator"] and m["users_evaluated"] == 50


def test_resume_store_takes_the_newest_complete_state(tmp_path):
    """A state whose files do not match its completeness marker (truncated by a crash or a full disk) is skipped."""
    from llm_i2i.llm.sft_resume import ResumeStore

    store = ResumeStore(tmp_path, "key")
    weights = {"w": torch.arange(6, dtype=torch.float32)}
    first = store.commit({"global_step": 1, "dtype": "torch.float32"}, weights, ({"0.exp_avg": torch.ones(6)}, {}), None, False)
    second = store.commit({"global_step": 2, "dtype": "torch.float32"}, weights, ({"0.exp_avg": torch.ones(6)}, {}), weights, True)
    assert not first.exists() and store.latest() == second  # a commit replaces the previous state
    assert store.load("torch.float32").best["w"].tolist() == list(range(6))
    (second / "model.safetensors").write_bytes((second / "model.safetensors").read_bytes()[:-8])
    assert store.latest() is None
    third = store.commit({"global_step": 3, "dtype": "torch.float32"}, weights, ({}, {}), None, False)
    assert store.latest() == third
    with pytest.raises(ValueError, match="run_key"):
        ResumeStore(tmp_path, "other key").load("torch.float32")


@pytest.mark.parametrize("load, cores, given, want",
                         [(0.1, 2, 2, 2), (0.7, 2, 2, 1), (30.0, 2, 2, 1), (1.2, 8, 8, 7), (0.0, 1, 1, 1), (0.2, 8, 4, 4)])
def test_training_threads_leave_loaded_cores_alone(monkeypatch, load, cores, given, want):
    """Unset sft.threads: no more than the process was given (a Ray worker's share), minus the cores others load."""
    from llm_i2i.llm import sft_trainer

    monkeypatch.setattr(sft_trainer, "busy_cores_of_others", lambda c: load)
    monkeypatch.setattr(sft_trainer.os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(sft_trainer.torch, "get_num_threads", lambda: given)
    assert sft_trainer.training_threads(None) == want
    assert sft_trainer.training_threads(3) == 3  # an explicit sft.threads always wins


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc")
def test_busy_cores_of_others_counts_another_process_and_not_this_one():
    """A spinning thread of this process is not someone else's load (the load average counted it, and a second
    SFT in the same process took half the cores); a spinning child process is."""
    import subprocess
    import sys
    import threading

    from llm_i2i.llm.sft_trainer import busy_cores_of_others

    cores = sorted(os.sched_getaffinity(0))
    stop = threading.Event()

    def spin_until_stopped():
        while not stop.is_set():
            pass

    spin = threading.Thread(target=spin_until_stopped, daemon=True)
    spin.start()
    try:
        mine = busy_cores_of_others(cores)
    finally:
        stop.set()
        spin.join()
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        theirs = busy_cores_of_others(cores)
    finally:
        child.kill()
        child.wait()
    assert mine < 0.5, mine
    assert theirs > 0.7 and theirs > mine + 0.5, (mine, theirs)


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc")
def test_busy_cores_of_others_lets_a_burst_that_ends_pass():
    """A Ray Train worker starts beside about a second of its controller's set-up: a burst that is over within
    the first window is not load to leave cores for."""
    import subprocess
    import sys

    from llm_i2i.llm.sft_trainer import busy_cores_of_others

    cores = sorted(os.sched_getaffinity(0))
    burst = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 0.4: pass"])
    try:
        seen = busy_cores_of_others(cores, 0.5, windows=3)
    finally:
        burst.wait()
    assert seen < 0.3, seen
