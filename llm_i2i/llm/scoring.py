"""Scoring with the LLMs in plain PyTorch (no Ray): one forward pass per batch, no autoregressive decoding.

The generator's next-item distribution is the LM head restricted to the item tokens at the prompt's last
position (columns ordered by item id, see `tokenizer.item_vocabulary`); the discriminator's confidence is
P(Yes) normalised over the two answer tokens.

Discriminator prompts share most of their tokens: every prompt opens with the same instruction, and the N
candidates of one user share the whole history. `yes_probability` runs each distinct context once and reuses
its KV cache (the automatic prefix caching vLLM does on GPU): on Beauty a prompt is ~28 tokens, of which only the
candidate's own token is new for the 2nd..Nth candidate of a user.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from llm_i2i.llm.prompts import discriminator_candidate, discriminator_context, encode_prompts, generator_prompt
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
    contexts = [
        discriminator_context(h, user_id=None if user_ids is None else user_ids[r], titles=titles, max_history=max_history)
        for r, h in enumerate(histories)
    ]
    distinct, context_of = np.unique(np.asarray(contexts, dtype=object), return_inverse=True)
    suffixes = [discriminator_candidate(c, titles) for c in candidates]
    suffix_ids = tokenizer(suffixes, add_special_tokens=False)["input_ids"] if suffixes else []
    h = last_hidden_shared(model, encode_prompts(tokenizer, list(distinct)), context_of, suffix_ids,
                           _pad_id(tokenizer), batch_size)
    yes, no = answer_token_ids(tokenizer)
    w = model.get_output_embeddings().weight[torch.tensor([yes, no], device=h.device)].float()
    logits = h @ w.T
    return torch.softmax(logits, dim=1)[:, 0].double().cpu().numpy()


@torch.no_grad()
def last_hidden_shared(
    model,
    contexts: Sequence[Sequence[int]],
    context_of: np.ndarray,
    suffixes: Sequence[Sequence[int]],
    pad_id: int,
    batch_size: int = 256,
) -> torch.Tensor:
    """Final hidden state of each sequence `contexts[context_of[r]] + suffixes[r]`, [n, hidden] float32.

    Equal to `last_hidden` on the concatenated sequences, computed with shared work: per batch of contexts, the
    tokens all of them open with run once (batch 1), each context's remaining tokens once, and each suffix on top
    of its context's KV cache. Right padding with explicit positions keeps every query row attending to at least
    one real token (no all-masked softmax rows).
    """
    from transformers import DynamicCache

    n = len(suffixes)
    if n == 0:
        return torch.zeros((0, model.config.hidden_size))
    if any(len(s) == 0 for s in suffixes):
        raise ValueError("every suffix needs at least one token")
    device = next(model.parameters()).device
    body = decoder_of(model)
    out = torch.empty((n, model.config.hidden_size), device=device)
    order = np.argsort(context_of, kind="stable")
    group_end = np.searchsorted(context_of[order], np.arange(len(contexts)), side="right")
    start = 0  # first context of the batch
    while start < len(contexts):
        # contexts [start, stop) with at most batch_size pairs (at least one context)
        first = group_end[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(group_end, first + batch_size, side="right")))
        stop = min(stop, len(contexts))
        rows = order[first : group_end[stop - 1]]
        batch = [list(contexts[c]) for c in range(start, stop)]
        common = _common_prefix_length(batch)
        cache = DynamicCache()
        if common:
            body(input_ids=torch.tensor([batch[0][:common]], device=device), past_key_values=cache, use_cache=True)
            cache.batch_select_indices(torch.zeros(len(batch), dtype=torch.long, device=device))
        rest = [b[common:] for b in batch]
        rest_len = torch.tensor([len(r) for r in rest], device=device)
        rest_mask = None
        if int(rest_len.max()) > 0:
            ids, rest_mask = pad_batch(rest, pad_id, device)
            mask = torch.cat([torch.ones((len(batch), common), dtype=torch.long, device=device), rest_mask], 1)
            pos = common + torch.arange(ids.shape[1], device=device).expand(len(batch), -1)
            body(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)
        local = torch.as_tensor(context_of[rows] - start, device=device)
        cache.batch_select_indices(local)
        sids, smask = pad_batch([suffixes[r] for r in rows], pad_id, device)
        parts = [torch.ones((len(rows), common), dtype=torch.long, device=device)]
        if rest_mask is not None:
            parts.append(rest_mask[local])
        mask = torch.cat(parts + [smask], 1)
        pos = (common + rest_len[local])[:, None] + torch.arange(sids.shape[1], device=device)
        h = body(input_ids=sids, attention_mask=mask, position_ids=pos, past_key_values=cache).last_hidden_state
        last = smask.sum(1) - 1
        out[torch.as_tensor(rows, device=device)] = h[torch.arange(len(rows), device=device), last].float()
        start = stop
    return out


def _common_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
    return n
