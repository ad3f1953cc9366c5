import numpy as np
import torch
import torch.nn.functional as F

from llm_i2i.llm.losses import SFTObjective, generator_loss, position_weights
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
