import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_i2i.llm.losses import SFTObjective, chunked_generator_loss, generator_loss, position_weights
from llm_i2i.llm.prompts import discriminator_prompt, encode_prompts, generator_prompt
from llm_i2i.llm.scoring import pad_batch
from llm_i2i.llm.tokenizer import answer_token_ids, item_vocabulary


def test_generator_loss_against_loop():
    rng = np.random.default_rng(0)
    h = torch.tensor(rng.normal(size=(7, 5)), dtype=torch.float32)
    w = torch.tensor(rng.normal(size=(11, 5)), dtype=torch.float32)
    t = torch.tensor(rng.integers(0, 11, 7))
    tail = torch.zeros(11, dtype=torch.bool)
    tail[[1, 4, 7]] = True
    t[0] = 4
    wt = position_weights(t, tail, 4.0, 1.0)
    got = generator_loss(h, w, t, wt)
    ref = sum((4.0 if t[i].item() in (1, 4, 7) else 1.0) * -torch.log_softmax(h[i] @ w.T, 0)[t[i]] for i in range(7)) / 7
    torch.testing.assert_close(got, ref)
    plain = generator_loss(h, w, t, position_weights(t, tail, 1.0, 1.0))
    torch.testing.assert_close(plain, F.cross_entropy(h @ w.T, t))


def _labels_for(tokenizer, seq_ids):
    _, tids = item_vocabulary(tokenizer)
    col = {int(x): c for c, x in enumerate(tids)}
    return [col.get(int(x), -1) for x in seq_ids[1:]] + [-1]


def test_generator_objective_equals_per_position_full_logits(tiny_model, tokenizer):
    """One padded forward with item-restricted softmax == full-vocabulary logits restricted, position by position."""
    _, tids = item_vocabulary(tokenizer)
    tail = np.zeros(len(tids), bool)
    tail[::3] = True
    obj = SFTObjective(tiny_model, "generator", tids, tail, alpha=4.0, beta=1.0)
    seqs = [[3, 5, 7, 2], [9], [1, 1, 4, 8, 12, 30]]
    ids = encode_prompts(tokenizer, [generator_prompt(s, max_history=None) for s in seqs])
    labels = [_labels_for(tokenizer, x) for x in ids]
    inp, mask = pad_batch(ids, tokenizer.pad_token_id)
    lab = torch.full(inp.shape, -1, dtype=torch.long)
    for r, lb in enumerate(labels):
        lab[r, : len(lb)] = torch.tensor(lb)
    calls = []
    handle = tiny_model.model.register_forward_hook(lambda *a: calls.append(1))
    got = obj(inp, mask, lab)
    handle.remove()
    assert len(calls) == 1
    terms = []
    with torch.no_grad():
        for x, lb in zip(ids, labels):
            logits = tiny_model(input_ids=torch.tensor([x])).logits[0][:, torch.as_tensor(tids)]
            for p, c in enumerate(lb):
                if c >= 0:
                    terms.append((4.0 if tail[c] else 1.0) * -torch.log_softmax(logits[p], 0)[c])
    assert len(terms) == sum(len(s) for s in seqs)
    torch.testing.assert_close(got.detach(), torch.stack(terms).mean(), atol=1e-5, rtol=1e-5)


def test_discriminator_objective_is_answer_token_ce(tiny_model, tokenizer):
    _, tids = item_vocabulary(tokenizer)
    yes, no = answer_token_ids(tokenizer)
    obj = SFTObjective(tiny_model, "discriminator", tids, answer_ids=(yes, no))
    prompts = [discriminator_prompt([1, 2, 3], 4), discriminator_prompt([5], 6)]
    ids = encode_prompts(tokenizer, prompts)
    inp, mask = pad_batch(ids, tokenizer.pad_token_id)
    labels = torch.tensor([1, 0])
    got = obj(inp, mask, labels)
    with torch.no_grad():
        ref = torch.stack([
            F.cross_entropy(tiny_model(input_ids=torch.tensor([x])).logits[0, -1:], torch.tensor([y]))
            for x, y in zip(ids, [yes, no])
        ]).mean()
    torch.testing.assert_close(got.detach(), ref, atol=1e-5, rtol=1e-5)


def test_alpha_scales_tail_gradient(tiny_model, tokenizer):
    """With only tail targets, alpha=4 gives exactly 4x the alpha=1 loss (and gradient)."""
    _, tids = item_vocabulary(tokenizer)
    tail = np.ones(len(tids), bool)
    ids = encode_prompts(tokenizer, [generator_prompt([3, 4, 5], max_history=None)])
    inp, mask = pad_batch(ids, tokenizer.pad_token_id)
    lab = torch.tensor([_labels_for(tokenizer, ids[0])])
    l4 = SFTObjective(tiny_model, "generator", tids, tail, alpha=4.0)(inp, mask, lab)
    l1 = SFTObjective(tiny_model, "generator", tids, tail, alpha=1.0)(inp, mask, lab)
    torch.testing.assert_close(l4, 4 * l1)


def _grads(loss_fn, h, w, t, wt, **kw):
    h = h.clone().requires_grad_()
    w = w.clone().requires_grad_()
    loss = loss_fn(h, w, t, wt, **kw)
    loss.backward()
    return loss.detach(), h.grad, w.grad


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 70), n_items=st.integers(1, 90), hidden=st.integers(1, 12), chunk=st.integers(1, 80),
       alpha=st.sampled_from([1.0, 4.0]), seed=st.integers(0, 2**16))
def test_chunked_loss_and_gradients_equal_reference(n, n_items, hidden, chunk, alpha, seed):
    """Any shape, any chunk size (including chunks wider than the batch): same loss, d hidden, d item rows."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, hidden, generator=g) * 3
    w = torch.randn(n_items, hidden, generator=g)
    t = torch.randint(0, n_items, (n,), generator=g)
    tail = torch.rand(n_items, generator=g) < 0.3
    wt = position_weights(t, tail, alpha, 1.0)
    ref = _grads(generator_loss, h, w, t, wt)
    got = _grads(chunked_generator_loss, h, w, t, wt, chunk=chunk)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_chunked_loss_at_sports_width_with_long_tail_weights():
    """Thousands of item columns, large logits, alpha=4 on a fifth of the items: fp32 agreement."""
    g = torch.Generator().manual_seed(1)
    h = torch.randn(300, 32, generator=g) * 4
    w = torch.randn(5000, 32, generator=g)
    t = torch.randint(0, 5000, (300,), generator=g)
    wt = position_weights(t, torch.arange(5000) % 5 == 0, 4.0, 1.0)
    assert (wt == 4.0).any() and (wt == 1.0).any()
    ref = _grads(generator_loss, h, w, t, wt)
    got = _grads(chunked_generator_loss, h, w, t, wt, chunk=64)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_chunked_loss_scales_upstream_gradient_and_skips_gradients_in_eval():
    h = torch.randn(9, 4, requires_grad=True)
    w = torch.randn(6, 4, requires_grad=True)
    t = torch.randint(0, 6, (9,))
    wt = torch.ones(9)
    (3 * chunked_generator_loss(h, w, t, wt, chunk=4)).backward()
    g3 = h.grad.clone()
    h.grad = None
    chunked_generator_loss(h, w, t, wt, chunk=4).backward()
    torch.testing.assert_close(g3, 3 * h.grad)
    with torch.no_grad():
        torch.testing.assert_close(chunked_generator_loss(h, w, t, wt), generator_loss(h, w, t, wt))


def test_objective_step_matches_reference_objective(tiny_model, tokenizer):
    """The shipped objective (item-block view + chunked loss) gives the reference objective's loss and every
    parameter gradient, on a padded batch with alpha=4 tail weights."""
    import copy

    _, tids = item_vocabulary(tokenizer)
    tail = np.zeros(len(tids), bool)
    tail[1::2] = True
    ids = encode_prompts(tokenizer, [generator_prompt(s, max_history=None) for s in ([3, 5, 7, 2], [9, 4], [1, 8, 12])])
    inp, mask = pad_batch(ids, tokenizer.pad_token_id)
    lab = torch.full(inp.shape, -1, dtype=torch.long)
    for r, x in enumerate(ids):
        lab[r, : len(x)] = torch.tensor(_labels_for(tokenizer, x))
    results = []
    for reference in (False, True):
        model = copy.deepcopy(tiny_model)
        obj = SFTObjective(model, "generator", tids, tail, alpha=4.0)
        assert obj.item_block is not None  # the tokenizer's item tokens are one block of ids
        if reference:
            obj.item_loss, obj.item_block = generator_loss, None
        loss = obj(inp, mask, lab)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (l_fast, g_fast), (l_ref, g_ref) = results
    torch.testing.assert_close(l_fast, l_ref, rtol=1e-5, atol=1e-6)
    assert g_fast.keys() == g_ref.keys()
    for name in g_ref:
        torch.testing.assert_close(g_fast[name], g_ref[name], rtol=1e-4, atol=1e-6, msg=name)
