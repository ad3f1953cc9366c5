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
