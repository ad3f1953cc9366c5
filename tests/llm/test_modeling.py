"""Model construction options: training-time dropout, and starting one checkpoint from another."""

from __future__ import annotations

import pytest
import torch

from llm_i2i.llm.modeling import ModelConfig, build_model, load_checkpoint, save_checkpoint
from llm_i2i.llm.tokenizer import build_tokenizer

SMALL = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)


def test_dropout_acts_in_train_mode_only(tokenizer, items):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL, dropout=0.3), tokenizer, items)
    x = torch.tensor([[1, 5, 7, 9]])
    model.train()
    a, b = model(input_ids=x).logits, model(input_ids=x).logits
    assert not torch.allclose(a, b)
    model.eval()
    torch.testing.assert_close(model(input_ids=x).logits, model(input_ids=x).logits)
    with pytest.raises(ValueError, match="dropout"):
        ModelConfig(dropout=1.0).validate()


def test_a_checkpoint_can_be_the_base_of_another(tmp_path, tokenizer, items):
    """The discriminator starts from the generator: same tokenizer (no duplicate item tokens), same weights."""
    torch.manual_seed(0)
    gen = build_model(ModelConfig(**SMALL), tokenizer, items).eval()
    save_checkpoint(gen, tokenizer, tmp_path / "gen", {"role": "generator"})
    tok2 = build_tokenizer(items, base_model=tmp_path / "gen")
    assert tok2.get_vocab() == tokenizer.get_vocab()
    disc = build_model(ModelConfig(base_model=str(tmp_path / "gen")), tok2, items).eval()
    torch.testing.assert_close(disc.state_dict(), gen.state_dict())
    reloaded, _, manifest = load_checkpoint(tmp_path / "gen")
    assert manifest["role"] == "generator" and reloaded.config.vocab_size == len(tokenizer)


def test_dtype_and_attention_follow_the_device(monkeypatch):
    """bf16 by default only for a pretrained base on CUDA; FlashAttention-2 only on CUDA with fp16/bf16 (it
    refuses fp32), SDPA everywhere else."""
    import sys
    import types

    from llm_i2i.llm.modeling import resolve_attn_implementation

    assert ModelConfig(base_model="/some/base").torch_dtype("cuda") == torch.bfloat16
    assert ModelConfig(base_model="/some/base").torch_dtype("cpu") == torch.float32
    assert ModelConfig().torch_dtype("cuda") == torch.float32
    assert ModelConfig(dtype="float16").torch_dtype("cpu") == torch.float16
    monkeypatch.setitem(sys.modules, "flash_attn", types.ModuleType("flash_attn"))  # "installed"
    assert resolve_attn_implementation("auto", torch.bfloat16, "cuda") == "flash_attention_2"
    assert resolve_attn_implementation("auto", torch.float32, "cuda") == "sdpa"
    assert resolve_attn_implementation("auto", torch.bfloat16, "cpu") == "sdpa"
    with pytest.raises(ValueError, match="flash_attention_2 needs CUDA and fp16/bf16"):
        resolve_attn_implementation("flash_attention_2", torch.float32, "cuda")
    monkeypatch.setitem(sys.modules, "flash_attn", None)  # not installed
    assert resolve_attn_implementation("auto", torch.bfloat16, "cuda") == "sdpa"


def test_text_pca_places_items_by_their_text(tmp_path, tokenizer):
    """item_init=text_pca on a scratch model: with a base no wider than the model, the projection is a rotation
    of the centred mean token embeddings, so item-item distances are those of the texts (brute force) up to one
    scale, and the rows have the model's init std; an item without text keeps its random row."""
    import numpy as np
    import pyarrow as pa

    from llm_i2i.data.schema import ITEMS_SCHEMA
    from llm_i2i.llm.tokenizer import item_token_ids

    from .conftest import make_items

    base_tok = build_tokenizer(make_items(40, seed=3), vocab_size=150)
    base = build_model(ModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32), base_tok)
    save_checkpoint(base, base_tok, tmp_path / "base", {"role": "text base"})
    items = make_items()
    texts = items.column("text").to_pylist()
    items = items.set_column(3, pa.field("text", pa.string()), pa.array(texts[:-1] + [None]))
    items = items.set_column(1, pa.field("title", pa.string()), pa.array(items.column("title").to_pylist()[:-1] + [None]))
    items = items.cast(ITEMS_SCHEMA)
    torch.manual_seed(0)
    random_rows = build_model(ModelConfig(**SMALL), tokenizer, items).get_input_embeddings().weight.detach()
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SMALL, item_init="text_pca", item_text_base=str(tmp_path / "base")), tokenizer, items)
    tids = item_token_ids(tokenizer, items.column("item_id").to_numpy())
    rows = model.get_input_embeddings().weight.detach()[torch.as_tensor(tids)].numpy()

    w = base.get_input_embeddings().weight.detach().numpy()
    means = np.stack([w[base_tok(t, add_special_tokens=False)["input_ids"]].mean(0) for t in texts[:-1]])
    d_text = np.linalg.norm(means[:, None] - means[None], axis=-1)
    d_rows = np.linalg.norm(rows[:-1, None] - rows[None, :-1], axis=-1)
    off = d_text > 1e-6  # distinct texts (two random titles can coincide: then both distances are 0)
    np.testing.assert_allclose(d_rows[~off], 0, atol=1e-6)
    np.testing.assert_allclose(d_rows[off] / d_text[off], np.median(d_rows[off] / d_text[off]), rtol=1e-3)
    assert abs(rows[:-1].std() - model.config.initializer_range) < 1e-4
    torch.testing.assert_close(torch.as_tensor(rows[-1]), random_rows[int(tids[-1])])
    assert ModelConfig().resolved_item_init == "text_pca"
    assert ModelConfig(base_model="/some/base").resolved_item_init == "title_mean"


def test_text_pca_keeps_a_checkpoints_own_item_tokens(tmp_path, tokenizer, items):
    """The discriminator starts from the generator: text_pca places new item tokens only, never trained ones."""
    torch.manual_seed(0)
    gen = build_model(ModelConfig(**SMALL, item_init="random"), tokenizer, items)
    save_checkpoint(gen, tokenizer, tmp_path / "gen", {"role": "generator"})
    tok2 = build_tokenizer(items, base_model=tmp_path / "gen")
    disc = build_model(ModelConfig(base_model=str(tmp_path / "gen"), item_init="text_pca",
                                   item_text_base=str(tmp_path / "gen")), tok2, items)
    torch.testing.assert_close(disc.state_dict(), gen.state_dict())


def _text_base(tmp_path):
    """A tiny local HF checkpoint to read item text with (a stand-in for SmolLM2 in CI)."""
    from .conftest import make_items

    base_tok = build_tokenizer(make_items(40, seed=3), vocab_size=150)
    torch.manual_seed(1)
    base = build_model(ModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, dropout=0.0),
                       base_tok)
    save_checkpoint(base, base_tok, tmp_path / "base", {"role": "text base"})
    return tmp_path / "base", base.eval(), base_tok


def test_forward_text_vectors_match_each_text_run_alone(tmp_path):
    """Batched, length-sorted and padded, each text's pooled final hidden states equal those of the text run by
    itself (brute force); empty text stays 0."""
    import numpy as np

    from llm_i2i.llm.modeling import forward_text_vectors

    path, base, tok = _text_base(tmp_path)
    texts = ["red nail polish", "", "a board game for two players and more", "lego bricks", "game"]
    got = forward_text_vectors(texts, path, batch_size=2)
    for n, text in enumerate(texts):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if not ids:
            assert not got["final_mean"][n].any() and not got["final_last"][n].any()
            continue
        with torch.no_grad():
            h = base.model(input_ids=torch.tensor([ids])).last_hidden_state[0].numpy()
        np.testing.assert_allclose(got["final_mean"][n], h.mean(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got["final_last"][n], h[-1], rtol=1e-4, atol=1e-5)


def test_text_encoder_pca_places_items_by_their_encoded_text_and_caches_the_vectors(tmp_path, monkeypatch,
                                                                                    tokenizer, items):
    """item_init=text_encoder_pca: item-item distances of the placed rows are those of the base's final_mean
    vectors up to one scale (a rotation, as for text_pca). The vectors are computed once per node: a second build
    reads the cache, changed text is encoded anew, and the cache keeps only the most recently used entries."""
    import numpy as np
    import pyarrow as pa

    from llm_i2i.llm import modeling
    from llm_i2i.llm.tokenizer import item_texts, item_token_ids

    monkeypatch.setenv("LLM_I2I_CACHE", str(tmp_path / "cache"))
    path, _, _ = _text_base(tmp_path)
    cfg = ModelConfig(**SMALL, item_init="text_encoder_pca", item_text_base=str(path))
    model = build_model(cfg, tokenizer, items)
    rows = model.get_input_embeddings().weight.detach()[torch.as_tensor(
        item_token_ids(tokenizer, items.column("item_id").to_numpy()))].numpy()
    vecs = modeling.forward_text_vectors(item_texts(items), path)["final_mean"]
    d_text = np.linalg.norm(vecs[:, None] - vecs[None], axis=-1)
    d_rows = np.linalg.norm(rows[:, None] - rows[None], axis=-1)
    off = d_text > 1e-6
    np.testing.assert_allclose(d_rows[off] / d_text[off], np.median(d_rows[off] / d_text[off]), rtol=1e-3)

    calls = []
    real = modeling.forward_text_vectors
    monkeypatch.setattr(modeling, "forward_text_vectors", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.testing.assert_close(build_model(cfg, tokenizer, items).get_input_embeddings().weight[
        torch.as_tensor(item_token_ids(tokenizer, items.column("item_id").to_numpy()))], torch.as_tensor(rows))
    assert calls == []  # read from the cache
    edited = items.set_column(3, pa.field("text", pa.string()),
                              pa.array([t + " deluxe" for t in items.column("text").to_pylist()]))
    build_model(cfg, tokenizer, edited)
    assert calls == [1]  # new text, new vectors
    cached = tmp_path / "cache" / "text_vectors"
    assert len(list(cached.glob("[!.]*"))) == 2
    # the cache keeps the most recently used entries only: with room for one, a third text leaves its own
    monkeypatch.setenv("LLM_I2I_TEXT_VECTOR_CACHE_KEEP", "1")
    third = items.set_column(3, pa.field("text", pa.string()),
                             pa.array([t + " mini" for t in items.column("text").to_pylist()]))
    build_model(cfg, tokenizer, third)
    assert calls == [1, 1] and len(list(cached.glob("[!.]*"))) == 1
    build_model(cfg, tokenizer, third)
    assert calls == [1, 1]  # the entry kept is the one just used
    monkeypatch.setenv("LLM_I2I_TEXT_VECTOR_CACHE_KEEP", "all")
    with pytest.raises(ValueError, match="LLM_I2I_TEXT_VECTOR_CACHE_KEEP must be an integer >= 1, got 'all'"):
        build_model(cfg, tokenizer, third)
    with pytest.raises(ValueError, match="item_init must be"):
        ModelConfig(item_init="text_encoder").validate()


def _lora_base(tmp_path, tokenizer, items):
    """A 3-layer checkpoint to put adapters on, and the tokenizer that reads it."""
    torch.manual_seed(0)
    base = build_model(ModelConfig(**{**SMALL, "num_layers": 3}, dropout=0.0), tokenizer, items)
    save_checkpoint(base, tokenizer, tmp_path / "base", {"role": "generator"})
    return str(tmp_path / "base"), build_tokenizer(items, base_model=tmp_path / "base"), base.eval()


def test_lora_trains_adapters_on_the_top_layers_and_merges_into_a_plain_checkpoint(tmp_path, tokenizer, items):
    from llm_i2i.llm.modeling import merged_weights
    from llm_i2i.llm.sft_resume import weights_of

    base_dir, tok, base = _lora_base(tmp_path, tokenizer, items)
    lora = build_model(ModelConfig(base_model=base_dir, lora_rank=4, lora_layers=1, dropout=0.0), tok, items).eval()
    trained = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n and ".layers.2." in n for n in trained)
    assert {n.split(".lora_")[0].rsplit(".", 1)[1] for n in trained} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    x = torch.tensor([[1, 5, 7, 9, 11]])
    torch.testing.assert_close(lora(input_ids=x).logits, base(input_ids=x).logits)  # lora_B starts at zero
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    adapted = lora(input_ids=x).logits
    assert not torch.allclose(adapted, base(input_ids=x).logits)

    merged = merged_weights(lora, weights_of(lora))
    assert not any("lora_" in k or "base_layer" in k for k in merged)
    assert merged.keys() == weights_of(base).keys()
    for k, v in weights_of(base).items():  # only the top layer's projections moved
        same = torch.equal(merged[k], v)
        assert same == (".layers.2." not in k or "norm" in k), k
    save_checkpoint(lora, tok, tmp_path / "merged", {"role": "discriminator"}, state_dict=merged)
    reloaded, _, _ = load_checkpoint(tmp_path / "merged")
    torch.testing.assert_close(reloaded(input_ids=x).logits, adapted, rtol=1e-5, atol=1e-5)


def test_lora_needs_a_base_and_a_sane_size():
    with pytest.raises(ValueError, match="base_model"):
        ModelConfig(lora_rank=8).validate()
    with pytest.raises(ValueError, match="lora_rank"):
        ModelConfig(base_model="/some/base", lora_rank=-1).validate()
