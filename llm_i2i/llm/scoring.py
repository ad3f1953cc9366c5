"""Scoring with the LLMs in plain PyTorch (no Ray): one forward pass per batch, no autoregressive decoding.

The generator's next-item distribution is the LM head restricted to the item tokens at the prompt's last
position (columns ordered by item id, see `tokenizer.item_vocabulary`); the discriminator's confidence is
P(Yes) normalised over the two answer tokens.

Discriminator prompts share most of their tokens: every prompt opens with the same instruction, and the N
candidates of one user share the whole history. `yes_probability` runs each distinct context once and reuses
its KV cache (the automatic prefix caching vLLM does on GPU): on Beauty a prompt is ~28 tokens, of which only the
candidate's own token is new for the 2nd..Nth candidate of a user.

A forward pass's memory (activations, KV cache) grows with its padded tokens, not its prompt count: 512 prompts of
28 item tokens are 14k tokens, 512 titled prompts of 384 tokens through a 30-layer base held 24 GB. So every batch
is capped twice, by `batch_size` prompts and by `max_tokens` padded tokens, and prompts are grouped by length so
that short ones do not pay for a long one's padding.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from llm_i2i.llm.prompts import discriminator_candidate, discriminator_context, encode_prompts, generator_prompt
from llm_i2i.llm.tokenizer import answer_token_ids, item_vocabulary


MAX_BATCH_TOKENS = 16384  # padded tokens per forward pass: the default model's 512 x 28-token prompts fit in one


def batch_spans(rows: Sequence[int], widths, max_rows: int, max_tokens: int) -> list[tuple[int, int]]:
    """Consecutive groups [start, stop) of the entries, greedy and in order, each with at most `max_rows` rows
    (entry i brings rows[i]) and at most `max_tokens` padded tokens: its rows x its padded width. `widths` is
    [n] or, for sequences padded part by part (context, then suffix), [n, parts], a group's width being the sum
    of each part's widest. An entry that alone exceeds a cap forms its own group."""
    if max_rows < 1 or max_tokens < 1:
        raise ValueError(f"batch caps must be positive, got {max_rows} rows and {max_tokens} tokens")
    widths = np.asarray(widths, dtype=np.int64)
    widths = widths[:, None] if widths.ndim == 1 else widths
    spans, start, n_rows, widest = [], 0, 0, np.zeros(widths.shape[1], np.int64)
    for i, r in enumerate(rows):
        grown_rows, grown_widest = n_rows + int(r), np.maximum(widest, widths[i])
        if i > start and (grown_rows > max_rows or grown_rows * int(grown_widest.sum()) > max_tokens):
            spans.append((start, i))
            start, grown_rows, grown_widest = i, int(r), widths[i]
        n_rows, widest = grown_rows, grown_widest
    if len(rows):
        spans.append((start, len(rows)))
    return spans


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
def last_hidden(model, seqs: Sequence[Sequence[int]], pad_id: int, batch_size: int = 256,
                max_tokens: int = MAX_BATCH_TOKENS) -> torch.Tensor:
    """Final hidden state at each sequence's last token, [n, hidden] float32."""
    device = next(model.parameters()).device
    body = decoder_of(model)
    out = torch.empty((len(seqs), model.config.hidden_size), device=device)
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    by_length = np.argsort(lengths, kind="stable")
    for start, stop in batch_spans(np.ones(len(seqs), np.int64), lengths[by_length], batch_size, max_tokens):
        rows = by_length[start:stop]
        ids, mask = pad_batch([seqs[r] for r in rows], pad_id, device)
        h = body(input_ids=ids, attention_mask=mask).last_hidden_state
        last = mask.sum(1) - 1
        out[torch.as_tensor(rows, device=device)] = h[torch.arange(len(rows), device=device), last].float()
    return out


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
    max_tokens: int = MAX_BATCH_TOKENS,
) -> torch.Tensor:
    """Logits [n, n_items] of the next item for each history (external item ids, oldest first)."""
    prompts = [
        generator_prompt(h, user_id=None if user_ids is None else user_ids[r], titles=titles, max_history=max_history)
        for r, h in enumerate(histories)
    ]
    h = last_hidden(model, encode_prompts(tokenizer, prompts), _pad_id(tokenizer), batch_size, max_tokens)
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
    max_tokens: int = MAX_BATCH_TOKENS,
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
                           _pad_id(tokenizer), batch_size, max_tokens)
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
    max_tokens: int = MAX_BATCH_TOKENS,
) -> torch.Tensor:
    """Final hidden state of each sequence `contexts[context_of[r]] + suffixes[r]`, [n, hidden] float32.

    Equal to `last_hidden` on the concatenated sequences, computed with shared work: per batch of contexts, the
    tokens all of them open with run once (batch 1), each context's remaining tokens once, and each suffix on top
    of its context's KV cache. Right padding with explicit positions keeps every query row attending to at least
    one real token (no all-masked softmax rows). A batch's KV cache is copied out to one row per pair, so its
    padded tokens are its pairs x (its longest context + its longest suffix), which `max_tokens` caps; contexts
    are taken shortest first.
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
    pairs = np.bincount(context_of, minlength=len(contexts))
    # per context: its length and its longest suffix, the two parts a batch pads separately
    widths = np.zeros((len(contexts), 2), np.int64)
    widths[:, 0] = [len(c) for c in contexts]
    np.maximum.at(widths[:, 1], context_of, np.array([len(s) for s in suffixes], dtype=np.int64))
    # renumber the contexts shortest first, so that a batch's contexts pad to similar lengths
    by_width = np.argsort(widths.sum(1), kind="stable")
    rank = np.empty_like(by_width)
    rank[by_width] = np.arange(len(by_width))
    contexts, context_of = [contexts[c] for c in by_width], rank[context_of]
    order = np.argsort(context_of, kind="stable")
    group_end = np.cumsum(pairs[by_width])
    for start, stop in batch_spans(pairs[by_width], widths[by_width], batch_size, max_tokens):
        first = group_end[start - 1] if start else 0
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
