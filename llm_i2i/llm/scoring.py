"""Scoring with the LLMs in plain PyTorch (no Ray): one forward pass per batch, no autoregressive decoding.

The generator's next-item distribution is the LM head restricted to the item tokens at the prompt's last
position (columns ordered by item id, see `tokenizer.item_vocabulary`); the discriminator's confidence is
P(Yes) normalised over the two answer tokens.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from llm_i2i.llm.prompts import discriminator_prompt, encode_prompts, generator_prompt
from llm_i2i.llm.tokenizer import answer_token_ids, item_vocabulary


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask)."""
    n, width = len(seqs), max(len(s) for s in seqs)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[r, : len(s)] = 1
    return ids.to(device), mask.to(device)


def decoder_of(model):
    """The transformer body (final hidden states, no LM head) of a HF causal LM."""
    return getattr(model, model.base_model_prefix)


@torch.no_grad()
def last_hidden(model, seqs: Sequence[Sequence[int]], pad_id: int, batch_size: int = 256) -> torch.Tensor:
    """Final hidden state at each sequence's last token, [n, hidden] float32."""
    device = next(model.parameters()).device
    out = []
    body = decoder_of(model)
    for s in range(0, len(seqs), batch_size):
        chunk = seqs[s : s + batch_size]
        ids, mask = pad_batch(chunk, pad_id, device)
        h = body(input_ids=ids, attention_mask=mask).last_hidden_state
        last = mask.sum(1) - 1
        out.append(h[torch.arange(len(chunk), device=device), last].float())
    return torch.cat(out) if out else torch.zeros((0, model.config.hidden_size))


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


@torch.no_grad()
def next_item_scores(
    model,
    tokenizer,
    histories: Sequence[Sequence[int]],
    user_ids: Sequence[int] | None = None,
    titles: Mapping[int, str] | None = None,
    max_history: int = 10,
    batch_size: int = 256,
) -> torch.Tensor:
    """Logits [n, n_items] of the next item for each history (external item ids, oldest first)."""
    prompts = [
        generator_prompt(h, user_id=None if user_ids is None else user_ids[r], titles=titles, max_history=max_history)
        for r, h in enumerate(histories)
    ]
    h = last_hidden(model, encode_prompts(tokenizer, prompts), _pad_id(tokenizer), batch_size)
    _, token_ids = item_vocabulary(tokenizer)
    w = model.get_output_embeddings().weight[torch.as_tensor(token_ids, device=h.device)].float()
    return h @ w.T


def topn_items(
    scores: torch.Tensor,
    n: int,
    exclude: Sequence[Sequence[int]] | None = None,
    item_ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-n per row -> (items [rows, n] int64, scores float32); -1 / -inf where fewer than n remain.

    Without `item_ids`, items and `exclude` are column indices; with it (the column -> item id map,
    e.g. `item_vocabulary(tokenizer)[0]`), both are external item ids.
    """
    s = scores.detach().float().clone()
    if exclude is not None:
        rows, cols = [], []
        for r, ex in enumerate(exclude):
            c = np.asarray(ex, dtype=np.int64)
            if item_ids is not None and len(c):
                pos = np.clip(np.searchsorted(item_ids, c), 0, len(item_ids) - 1)
                c = pos[item_ids[pos] == c]
            rows.append(np.full(len(c), r))
            cols.append(c)
        if rows:
            s[torch.as_tensor(np.concatenate(rows)), torch.as_tensor(np.concatenate(cols))] = float("-inf")
    k = min(n, s.shape[1])
    val, idx = torch.topk(s, k, dim=1)
    idx_np, val_np = idx.cpu().numpy().astype(np.int64), val.cpu().numpy().astype(np.float32)
    idx_np[~np.isfinite(val_np)] = -1
    if k < n:
        idx_np = np.pad(idx_np, ((0, 0), (0, n - k)), constant_values=-1)
        val_np = np.pad(val_np, ((0, 0), (0, n - k)), constant_values=-np.inf)
    if item_ids is not None:
        idx_np = np.where(idx_np >= 0, item_ids[np.maximum(idx_np, 0)], -1)
    return idx_np, val_np


@torch.no_grad()
def yes_probability(
    model,
    tokenizer,
    histories: Sequence[Sequence[int]],
    candidates: Sequence[int],
    user_ids: Sequence[int] | None = None,
    titles: Mapping[int, str] | None = None,
    max_history: int = 10,
    batch_size: int = 256,
) -> np.ndarray:
    """P(Yes) / (P(Yes) + P(No)) for each (history, candidate) pair, float64 [n]."""
    if len(histories) != len(candidates):
        raise ValueError(f"{len(histories)} histories but {len(candidates)} candidates")
    prompts = [
        discriminator_prompt(h, c, user_id=None if user_ids is None else user_ids[r], titles=titles, max_history=max_history)
        for r, (h, c) in enumerate(zip(histories, candidates))
    ]
    h = last_hidden(model, encode_prompts(tokenizer, prompts), _pad_id(tokenizer), batch_size)
    yes, no = answer_token_ids(tokenizer)
    w = model.get_output_embeddings().weight[torch.tensor([yes, no], device=h.device)].float()
    logits = h @ w.T
    return torch.softmax(logits, dim=1)[:, 0].double().cpu().numpy()
