import numpy as np
import pytest
import torch

from llm_i2i.llm.modeling import ModelConfig, build_model, load_checkpoint, save_checkpoint
from llm_i2i.llm.prompts import discriminator_prompt, encode_prompts, generator_prompt
from llm_i2i.llm.scoring import decoder_of, next_item_scores, topn_items, yes_probability
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
        for batch_size, max_tokens in ((1, 10**6), (4, 10**6), (64, 10**6), (64, 90), (64, 1)):
            p = yes_probability(model, tokenizer, hists, cands, titles=titles, batch_size=batch_size,
                                max_tokens=max_tokens)
            np.testing.assert_allclose(p, ref, atol=1e-5)


def test_batch_spans_are_greedy_runs_within_both_caps():
    """Oracle: the spans tile the entries in order; each holds both caps unless it is one entry; none could take
    the next entry without breaking a cap."""
    from llm_i2i.llm.scoring import batch_spans

    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(0, 30))
        rows, widths = rng.integers(0, 6, n), rng.integers(1, 50, (n, int(rng.integers(1, 3))))
        max_rows, max_tokens = int(rng.integers(1, 12)), int(rng.integers(1, 300))
        spans = batch_spans(rows, widths[:, 0] if widths.shape[1] == 1 else widths, max_rows, max_tokens)
        assert [i for a, b in spans for i in range(a, b)] == list(range(n))

        def fits(a, b):  # every part padded to its own widest
            return rows[a:b].sum() <= max_rows and rows[a:b].sum() * widths[a:b].max(0).sum() <= max_tokens

        for a, b in spans:
            assert b > a and (b - a == 1 or fits(a, b))
            assert b == n or not fits(a, b + 1)
    with pytest.raises(ValueError, match="positive"):
        batch_spans([1], [1], 1, 0)


def _padded_tokens_per_forward(model):
    """Record each decoder forward's rows x (cached + new positions): what its KV cache and activations hold."""
    seen = []

    def hook(_module, args, kwargs):
        ids, cache = kwargs["input_ids"], kwargs.get("past_key_values")
        cached = cache.get_seq_length() if cache is not None else 0
        seen.append(ids.shape[0] * (cached + ids.shape[1]))

    return seen, decoder_of(model).register_forward_pre_hook(hook, with_kwargs=True)


def test_scoring_forwards_stay_under_the_token_cap_and_scores_do_not_move(tiny_model, tokenizer, items):
    """Long titled prompts: with a token cap no forward pass holds more padded tokens than the cap (unless one
    prompt alone is longer), and every score equals the uncapped one."""
    from llm_i2i.llm.prompts import titles_from_items

    titles = titles_from_items(items)
    rng = np.random.default_rng(2)
    hists = [rng.integers(1, 31, int(rng.integers(0, 12))).tolist() for _ in range(40)]
    cands = rng.integers(1, 31, 40).tolist()
    longest = max(len(ids) for ids in encode_prompts(
        tokenizer, [discriminator_prompt(h, c, titles=titles) for h, c in zip(hists, cands)]))
    cap = 3 * longest
    free, handle = _padded_tokens_per_forward(tiny_model)
    try:
        free_scores = next_item_scores(tiny_model, tokenizer, hists, titles=titles, batch_size=512, max_tokens=10**9)
        free_p = yes_probability(tiny_model, tokenizer, hists, cands, titles=titles, batch_size=512, max_tokens=10**9)
    finally:
        handle.remove()
    assert max(free) > cap  # uncapped, one pass holds them all
    seen, handle = _padded_tokens_per_forward(tiny_model)
    try:
        scores = next_item_scores(tiny_model, tokenizer, hists, titles=titles, batch_size=512, max_tokens=cap)
        p = yes_probability(tiny_model, tokenizer, hists, cands, titles=titles, batch_size=512, max_tokens=cap)
    finally:
        handle.remove()
    assert len(seen) > 3 and max(seen) <= cap
    torch.testing.assert_close(scores, free_scores, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(p, free_p, atol=1e-5)


def test_discriminator_context_tokenises_the_same_alone(tokenizer, items):
    """The KV reuse needs ids(context) + ids(candidate) == ids(whole prompt)."""
    from llm_i2i.llm.prompts import discriminator_candidate, discriminator_context, titles_from_items

    for titles in (None, titles_from_items(items)):
        for h, c in (([], 4), ([1, 2, 3], 9), (list(range(1, 20)), 30)):
            whole = encode_prompts(tokenizer, [discriminator_prompt(h, c, titles=titles)])[0]
            ctx = encode_prompts(tokenizer, [discriminator_context(h, titles=titles)])[0]
            cand = tokenizer(discriminator_candidate(c, titles), add_special_tokens=False)["input_ids"]
            assert whole == ctx + cand
