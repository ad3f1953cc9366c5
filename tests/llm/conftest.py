"""Tiny item catalogues and a tiny model shared by the LLM tests."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from llm_i2i.data.schema import ITEMS_SCHEMA

WORDS = ["red", "blue", "nail", "polish", "cream", "face", "lego", "car", "doll", "puzzle", "soft", "large"]


def make_items(n: int = 30, seed: int = 0, first_id: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    titles = [" ".join(rng.choice(WORDS, 3)) for _ in ids]
    return pa.table(
        {"item_id": ids, "title": titles, "categories": [["Cat"]] * n, "text": [f"{t} | Cat" for t in titles]},
        schema=ITEMS_SCHEMA,
    )


@pytest.fixture(scope="session")
def items() -> pa.Table:
    return make_items()


@pytest.fixture(scope="session")
def tokenizer(items):
    from llm_i2i.llm.tokenizer import build_tokenizer

    return build_tokenizer(items, vocab_size=200)


@pytest.fixture(scope="session")
def tiny_model(tokenizer, items):
    import torch

    from llm_i2i.llm.modeling import ModelConfig, build_model

    torch.manual_seed(0)
    return build_model(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64), tokenizer, items).eval()
