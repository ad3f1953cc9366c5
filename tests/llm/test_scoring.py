import numpy as np
import torch

from llm_i2i.llm.modeling import ModelConfig, build_model, load_checkpoint, save_checkpoint
from llm_i2i.llm.prompts import discriminator_prompt, encode_prompts, generator_prompt
from llm_i2i.llm.scoring import next_item_scores, topn_items, yes_probability
from llm_i2i.llm.tokenizer import answer_token_ids, item_vocabulary


def _full_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1]


def test_next_item_scores_match_full_vocab_logits_one_by_one(tiny_model, tokenizer):
    """Batched, right-padded, item-restricted scores == unpadded full-vocabulary logits of each prompt."""
    hists = [[1, 2, 3], [4], list(range(1, 25)), []]
    scores = next_item_scores(tiny_model, tokenizer, hists, max_history=10, batch_size=3)
    _, tids = item_vocabulary(tokenizer)
    assert scores.shape == (4, len(tids))
    for r, h in enumerate(hists):
        ids = encode_prompts(tokenizer, [generator_prompt(h, max_history=10)])[0]
        ref = _full_logits(tiny_model, ids)[torch.as_tensor(tids)]
        torch.testing.assert_close(scores[r], ref, atol=1e-4, rtol=1e-4)


def test_yes_probability_is_normalised_yes_no(tiny_model, tokenizer):
    hists, cands = [[1, 2], [3, 4, 5], []], [7, 8, 9]
    p = yes_probability(tiny_model, tokenizer, hists, cands)
    yes, no = answer_token_ids(tokenizer)
    for r in range(3):
        lg = _full_logits(tiny_model, encode_prompts(tokenizer, [discriminator_prompt(hists[r], cands[r])])[0])
        ref = torch.softmax(lg[[yes, no]], 0)[0].item()
        assert abs(p[r] - ref) < 1e-5
    assert np.all((p > 0) & (p < 1))


def test_topn_items_against_brute_force():
    rng = np.random.default_rng(0)
    s = torch.tensor(rng.normal(size=(6, 15)), dtype=torch.float32)
    item_ids = np.arange(100, 115)
    exclude = [list(rng.choice(item_ids, rng.integers(0, 5), replace=False)) for _ in range(6)]
    got, vals = topn_items(s, 4, exclude, item_ids)
    for r in range(6):
        order = [item_ids[j] for j in np.argsort(-s[r].numpy(), kind="stable") if item_ids[j] not in exclude[r]]
        assert got[r].tolist() == order[:4]
        assert np.all(np.diff(vals[r]) <= 0)
    idx, v = topn_items(s[:, :3], 5, [[0], [], [], [], [], []])
    assert idx[0].tolist()[2:] == [-1, -1, -1] and set(idx[0, :2]) == {1, 2}
    assert np.isneginf(v[0, 2:]).all()


def test_checkpoint_roundtrip_keeps_scores(tmp_path, tiny_model, tokenizer, items):
    save_checkpoint(tiny_model, tokenizer, tmp_path / "ckpt", {"role": "generator", "metrics": {"x": 1.0}})
    model, tok, manifest = load_checkpoint(tmp_path / "ckpt")
    assert manifest["role"] == "generator" and manifest["item_ids"] == items.column("item_id").to_pylist()
    h = [[1, 2, 3], [5]]
    torch.testing.assert_close(next_item_scores(model, tok, h), next_item_scores(tiny_model, tokenizer, h))


def test_title_mean_init(tokenizer, items):
    from llm_i2i.llm.tokenizer import item_token_ids

    model = build_model(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, item_init="title_mean"), tokenizer, items)
    emb = model.get_input_embeddings().weight.detach()
    title = items.column("title")[0].as_py()
    ids = tokenizer(title, add_special_tokens=False)["input_ids"]
    tid = int(item_token_ids(tokenizer, [items.column("item_id")[0].as_py()])[0])
    torch.testing.assert_close(emb[tid], emb[ids].mean(0))


def test_yes_probability_reuses_shared_contexts_exactly(tiny_model, tokenizer, items):
    """Shared-context scoring (one KV cache per distinct history, the instruction run once per batch) == each
    whole prompt run alone: repeated and distinct histories, empty and over-long ones, with and without titles,
    batches that split a user's candidates."""
    from llm_i2i.llm.prompts import titles_from_items

    torch.manual_seed(1)
    two_layers = build_model(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64), tokenizer,
                             items).eval()
    rng = np.random.default_rng(1)
    users = [[], [3], list(range(1, 25)), [5, 6, 7], [5, 6, 7, 8]]
    hists = [users[u] for u in rng.integers(0, len(users), 23)]
    cands = rng.integers(1, 31, 23).tolist()
    yes, no = answer_token_ids(tokenizer)
    for model, titles in ((tiny_model, None), (tiny_model, titles_from_items(items)), (two_layers, None)):
        ref = []
        for h, c in zip(hists, cands):
            lg = _full_logits(model, encode_prompts(tokenizer, [discriminator_prompt(h, c, titles=titles)])[0])
            ref.append(torch.softmax(lg[[yes, no]], 0)[0].item())
        for batch_size in (1, 4, 64):
            p = yes_probability(model, tokenizer, hists, cands, titles=titles, batch_size=batch_size)
            np.testing.assert_allclose(p, ref, atol=1e-5)


def test_discriminator_context_tokenises_the_same_alone(tokenizer, items):
    """The KV reuse needs ids(context) + ids(candidate) == ids(whole prompt)."""
    from llm_i2i.llm.prompts import discriminator_candidate, discriminator_context, titles_from_items

    for titles in (None, titles_from_items(items)):
        for h, c in (([], 4), ([1, 2, 3], 9), (list(range(1, 20)), 30)):
            whole = encode_prompts(tokenizer, [discriminator_prompt(h, c, titles=titles)])[0]
            ctx = encode_prompts(tokenizer, [discriminator_context(h, titles=titles)])[0]
            cand = tokenizer(discriminator_candidate(c, titles), add_special_tokens=False)["input_ids"]
            assert whole == ctx + cand
