"""HF engine vs brute-force full-vocabulary logits; generate/discriminate batch cores (no Ray)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from llm_i2i.data import Dataset, save_dataset
from llm_i2i.data.schema import INTERACTIONS_SCHEMA
from llm_i2i.llm.discriminate import (DiscriminateConfig, attach_histories, discriminate_batch,
                                      real_interaction_pairs, run_discriminate)
from llm_i2i.llm.generate import (CANDIDATES_SCHEMA, HISTORY, GenerateConfig, generate_batch, history_requests,
                                  run_generate, split_sequences)
from llm_i2i.llm.inference import HFEngine, TopItems, make_engine
from llm_i2i.llm.modeling import save_checkpoint
from llm_i2i.llm.prompts import discriminator_prompt, encode_prompts, generator_prompt
from llm_i2i.llm.tokenizer import answer_token_ids, item_vocabulary
from ray_jobs.batch_inference import map_with_engine


def make_interactions(item_ids: np.ndarray, n_users: int = 23, seed: int = 1) -> pa.Table:
    """Users with 0..14 interactions (some too short for a train split) over the catalogue."""
    rng = np.random.default_rng(seed)
    users, items, ts = [], [], []
    for u in range(n_users):
        k = int(rng.integers(0, 15))
        users += [100 + u] * k
        items += rng.choice(item_ids, k).tolist()
        ts += list(range(k))
    n = len(users)
    return pa.table({"user_id": users, "item_id": items, "timestamp": ts, "source": ["real"] * n,
                     "weight": np.ones(n, np.float32)}, schema=INTERACTIONS_SCHEMA)


@pytest.fixture(scope="session")
def world(tmp_path_factory, tiny_model, tokenizer, items):
    """(checkpoint dir, canonical dataset dir) on D1's tiny model and catalogue."""
    root = tmp_path_factory.mktemp("llm_world")
    ckpt = save_checkpoint(tiny_model, tokenizer, root / "ckpt", {"role": "generator"})
    ds = Dataset("tiny", make_interactions(items.column("item_id").to_numpy()), items)
    return str(ckpt), str(save_dataset(ds, root / "data"))


@pytest.fixture(scope="session")
def engine(world):
    return HFEngine(world[0])


def brute_force_log_probs(engine: HFEngine, history) -> np.ndarray:
    """Item-token log-softmax of the unpadded full-vocabulary logits at the prompt's last position."""
    ids = encode_prompts(engine.tokenizer, [generator_prompt(list(history), max_history=None)])[0]
    with torch.no_grad():
        logits = engine.model(input_ids=torch.tensor([ids])).logits[0, -1]
    _, tids = item_vocabulary(engine.tokenizer)
    return torch.log_softmax(logits[torch.as_tensor(tids)], 0).numpy()


@pytest.mark.parametrize("exclude", [True, False])
def test_hf_top_items_match_brute_force(engine, exclude):
    rng = np.random.default_rng(3)
    hists = [rng.choice(engine.item_ids, int(rng.integers(1, 12))) for _ in range(7)]
    got = engine.top_items(hists, 6, exclude)
    for h, items, scores in zip(hists, got.item_ids, got.scores):
        lp = brute_force_log_probs(engine, h)
        if exclude:
            lp[np.isin(engine.item_ids, h)] = -np.inf
        order = np.argsort(-lp, kind="stable")[:6]
        np.testing.assert_allclose(scores, lp[order], atol=1e-4)
        np.testing.assert_array_equal(np.sort(items), np.sort(engine.item_ids[order]))  # ties aside, same set
        assert np.all(np.diff(scores) <= 1e-6)


def test_hf_top_items_fewer_than_n_after_exclusion(engine):
    every = engine.item_ids[:-2]
    got = engine.top_items([every], 5, True)
    assert sorted(got.item_ids[0].tolist()) == sorted(engine.item_ids[-2:].tolist())


def test_hf_yes_probability_matches_brute_force(engine):
    hists, cands = [np.array([1, 2]), np.array([3, 4, 5, 6])], np.array([7, 8])
    p = engine.yes_probability(hists, cands)
    yes, no = answer_token_ids(engine.tokenizer)
    for r in range(2):
        ids = encode_prompts(engine.tokenizer, [discriminator_prompt(hists[r].tolist(), int(cands[r]), max_history=None)])[0]
        with torch.no_grad():
            lg = engine.model(input_ids=torch.tensor([ids])).logits[0, -1]
        assert p[r] == pytest.approx(torch.softmax(lg[[yes, no]], 0)[0].item(), abs=1e-5)
    assert p.dtype == np.float32


def test_make_engine_rejects_unknown_kind(world):
    with pytest.raises(ValueError, match="unknown engine"):
        make_engine("tgi", world[0])


class FlakyEngine:
    """Wraps an engine; any batch containing history item `poison` raises (to test row isolation)."""

    def __init__(self, inner, poison: int):
        self.inner, self.poison, self.item_ids = inner, poison, inner.item_ids
        self.known_items = inner.known_items

    def _check(self, hs):
        if any(self.poison in np.asarray(h).tolist() for h in hs):
            raise RuntimeError("boom")

    def top_items(self, hs, n, ex) -> TopItems:
        self._check(hs)
        return self.inner.top_items(hs, n, ex)

    def yes_probability(self, hs, cands):
        self._check(hs)
        return self.inner.yes_probability(hs, cands)


def _requests(rows):
    return pa.table({"user_id": pa.array([r[0] for r in rows], pa.int64()),
                     HISTORY: pa.array([r[1] for r in rows], pa.list_(pa.int64()))})


def test_generate_batch_errors_are_rows_not_crashes(engine):
    long = list(range(1, 26))
    batch = _requests([(1, [1, 2, 3]), (2, []), (3, None), (4, [1, 99999]), (None, [1]), (6, long), (7, [5, 13])])
    out = generate_batch(FlakyEngine(engine, poison=13), batch, recall_number=4, exclude_history=True, history_len=10)
    assert out.schema == CANDIDATES_SCHEMA
    d = out.to_pydict()
    errs = {u: e for u, e in zip(d["user_id"], d["error"]) if e is not None}
    assert errs[2] == "empty history" and "null history" in errs[3] and "99999" in errs[4]
    assert errs[None].startswith("malformed row") and errs[7].startswith("engine error: RuntimeError")
    assert 1 not in errs and 6 not in errs
    ok = out.filter(pa.compute.is_null(out.column("error")))
    assert ok.num_rows == 8  # users 1 and 6, 4 each
    # over-long history is truncated to its 10 most recent items, not an error
    ref = engine.top_items([np.array(long[-10:])], 4, True)
    user6 = ok.filter(pa.compute.equal(ok.column("user_id"), 6))
    assert user6.column("item_id").to_pylist() == ref.item_ids[0].tolist()
    assert user6.column("rank").to_pylist() == [0, 1, 2, 3]
    assert not set(user6.column("item_id").to_pylist()) & set(long[-10:])


def test_history_requests_take_most_recent_items_of_split(world):
    from llm_i2i.data import load_dataset

    seqs = load_dataset(world[1]).sequences()
    train = split_sequences(seqs, "train")
    req = history_requests(train, 4, max_users=9)
    assert req.num_rows == 9
    for r, (u, h) in enumerate(zip(req.column("user_id").to_pylist(), req.column(HISTORY).to_pylist())):
        assert u == seqs.user_ids[r]
        assert h == seqs.item_ids[seqs.user(r)[:-2]][-4:].tolist()  # never the valid/test targets


def test_attach_histories_split_vs_position(world):
    from llm_i2i.data import load_dataset

    full = load_dataset(world[1]).sequences()
    train = split_sequences(full, "train")
    u = int(np.argmax(full.lengths))
    real = real_interaction_pairs(full)
    assert real.num_rows == len(full.items)
    pairs = pa.table({"user_id": [full.user_ids[u], full.user_ids[u], 424242],
                      "item_id": [1, 2, 3], "position": pa.array([None, 5, None], pa.int64())})
    h = attach_histories(pairs, full, train, 3).column(HISTORY).to_pylist()
    assert h[0] == full.item_ids[full.user(u)[:-2][-3:]].tolist()
    assert h[1] == full.item_ids[full.user(u)[2:5]].tolist()
    assert h[2] is None
    with pytest.raises(ValueError, match="missing column"):
        attach_histories(pa.table({"user_id": [1]}), full, train, 3)


def test_discriminate_batch_keeps_columns_and_reports_errors(engine):
    batch = pa.table({"user_id": pa.array([1, 2, 3, 4, None], pa.int64()), "item_id": pa.array([5, 6, 77777, 8, 9], pa.int64()),
                      "tag": ["a", "b", "c", "d", "e"],
                      HISTORY: pa.array([[1, 2], None, [1], [], [1]], pa.list_(pa.int64()))})
    out = discriminate_batch(engine, batch, history_len=10)
    assert out.column_names == ["user_id", "item_id", "tag", "confidence", "error"]
    err = out.column("error").to_pylist()
    assert err[0] is None and "unknown user_id" in err[1] and "77777" in err[2]
    assert err[3] == "empty history" and err[4].startswith("malformed row")
    conf = out.column("confidence").to_pylist()
    assert conf[0] == pytest.approx(float(engine.yes_probability([np.array([1, 2])], np.array([5]))[0]))
    assert conf[1:] == [None] * 4


def test_run_generate_and_discriminate_in_process(world, engine, tmp_path):
    ckpt, data = world
    cfg = GenerateConfig(recall_number=3, num_actors=0, batch_size=5)
    stats = run_generate(cfg, ckpt, data, tmp_path / "candidates.parquet", map_with_engine)
    cand = pq.read_table(tmp_path / "candidates.parquet")
    assert cand.schema == CANDIDATES_SCHEMA
    n_err = len(cand.column("error").drop_null())
    assert stats["error_rows"] == n_err and stats["rows_out"] == cand.num_rows
    assert stats["users_in"] == len(cand.column("user_id").unique())
    assert n_err > 0  # the fixture has users too short for a train history
    ok = cand.filter(pa.compute.is_null(cand.column("error")))
    assert ok.num_rows == 3 * (stats["users_in"] - n_err)
    # discriminate the candidates (their error rows come back as malformed rows: null item_id)
    dcfg = DiscriminateConfig(num_actors=0, batch_size=7)
    dstats = run_discriminate(dcfg, ckpt, data, tmp_path / "candidates.parquet", tmp_path / "scored.parquet",
                              map_with_engine)
    scored = pq.read_table(tmp_path / "scored.parquet")
    assert scored.num_rows == cand.num_rows and dstats["error_rows"] == n_err
    assert scored.column_names == CANDIDATES_SCHEMA.names[:4] + ["confidence", "error"]
    conf = np.array(scored.column("confidence").drop_null().to_pylist())
    assert len(conf) == ok.num_rows and np.all((conf > 0) & (conf < 1))


def test_configs_load_from_overrides_and_reject_bad_values():
    from llm_i2i.config import ConfigError, load_config
    from llm_i2i.llm.generate import engine_spec

    cfg = load_config(GenerateConfig, None, ["engine_options.device=cpu", "recall_number=7", "torch_threads=2"])
    assert cfg.recall_number == 7 and engine_spec(cfg, "ck").options == {"torch_threads": 2, "device": "cpu"}
    assert engine_spec(load_config(DiscriminateConfig, None, ["engine=vllm", "torch_threads=2"]), "ck").options == {}
    for bad in (["recall_number=0"], ["engine=tgi"], ["split=test"], ["nope=1"], ["actor_start_timeout_s=-1"]):
        with pytest.raises((ValueError, ConfigError)):
            load_config(GenerateConfig, None, bad)
    with pytest.raises(ValueError, match="history_len"):
        load_config(DiscriminateConfig, None, ["history_len=0"])
    with pytest.raises(ValueError, match="actor_start_timeout_s"):
        load_config(DiscriminateConfig, None, ["actor_start_timeout_s=-1"])


def test_titles_go_into_prompts_when_the_checkpoint_was_trained_with_them(world, tiny_model, tokenizer, items, tmp_path):
    from llm_i2i.data import load_dataset
    from llm_i2i.llm.prompts import titles_from_items

    ckpt = str(save_checkpoint(tiny_model, tokenizer, tmp_path / "ckpt", {"role": "generator", "sft_config": {"titles": True}}))
    run_generate(GenerateConfig(recall_number=3, num_actors=0, max_users=12), ckpt, world[1], tmp_path / "c.parquet",
                 map_with_engine)
    cand = pq.read_table(tmp_path / "c.parquet")
    cand = cand.filter(pa.compute.is_null(cand.column("error")))
    u = cand.column("user_id")[0].as_py()
    seqs = split_sequences(load_dataset(world[1]).sequences(), "train")
    hist = seqs.item_ids[seqs.user(int(np.searchsorted(seqs.user_ids, u)))][-10:]
    with_titles = HFEngine(ckpt, titles=titles_from_items(items)).top_items([hist], 3, True)
    without = HFEngine(ckpt).top_items([hist], 3, True)
    got = cand.filter(pa.compute.equal(cand.column("user_id"), u)).column("score").to_numpy()
    np.testing.assert_allclose(got, with_titles.scores[0], atol=1e-5)
    assert not np.allclose(got, without.scores[0], atol=1e-5)
