"""SFT data, batching, AUC, the plain training loop (quality on a learnable synthetic set) and resume."""

import json
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
    m = manifest["metrics"]
    assert {"valid_recall@10", "valid_ndcg@10", "valid_long_tail_recall@10"} <= m.keys()
    # the synthetic set follows item chains with p=0.9: a trained generator is far above random (10/60)
    assert m["valid_recall@10"] > 2 * 10 / split.full.n_items
    losses = [h["train_loss"] for h in manifest["training"]["history"]]
    assert losses[-1] < losses[0]
    test = evaluate_generator(generator_ckpt, dataset_dir, EvalConfig(split="test", ks=(10,)), exclude_history=False)
    assert test["users_evaluated"] == int((split.targets("test") >= 0).sum())
    assert 0 < test["recall@10"] <= 1


def test_run_sft_is_idempotent(generator_ckpt, dataset_dir):
    before = (generator_ckpt / "model.safetensors").stat().st_mtime_ns
    cfg = SFTConfig(epochs=3, lr=5e-3, batch_size=32, warmup_steps=5, model=ModelConfig(**TINY))
    assert run_sft(cfg, dataset_dir, generator_ckpt) == generator_ckpt
    assert (generator_ckpt / "model.safetensors").stat().st_mtime_ns == before


def test_killed_run_resumes_to_the_same_weights(dataset_dir, tmp_path):
    base = dict(epochs=2, lr=5e-3, batch_size=64, warmup_steps=2, eval_users=50, checkpoint_every=1000, model=ModelConfig(**TINY))
    full = run_sft(SFTConfig(**base), dataset_dir, tmp_path / "full")
    assert run_sft(SFTConfig(**base, stop_after_steps=3), dataset_dir, tmp_path / "cut") is None
    assert (tmp_path / ".cut.resume" / "state.json").exists()
    assert run_sft(SFTConfig(**base, stop_after_steps=4), dataset_dir, tmp_path / "cut") is None  # crosses an epoch
    resumed = run_sft(SFTConfig(**base), dataset_dir, tmp_path / "cut")
    assert resumed is not None and not (tmp_path / ".cut.resume").exists()
    a, _, ma = load_checkpoint(full)
    b, _, mb = load_checkpoint(resumed)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(va, vb, msg=ka)
    assert ma["training"]["global_step"] == mb["training"]["global_step"]


def test_discriminator_from_generator_learns(generator_ckpt, dataset_dir, tmp_path):
    """The discriminator starts from the generator checkpoint (same tokenizer, item embeddings) and separates
    held-out next items from random items well above chance (0.5)."""
    cfg = SFTConfig(role="discriminator", epochs=4, lr=5e-3, batch_size=32, warmup_steps=5, positions_per_user=4,
                    model=ModelConfig(**{**TINY, "base_model": str(generator_ckpt)}))
    ckpt = run_sft(cfg, dataset_dir, tmp_path / "disc")
    manifest = json.loads((ckpt / "llm_i2i_manifest.json").read_text())
    assert manifest["sft_config"]["model"]["base_model"] == str(generator_ckpt)
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
