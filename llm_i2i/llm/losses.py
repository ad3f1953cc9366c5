"""SFT objectives (paper eqs. 1-3) as plain PyTorch, wrapped in one nn.Module so DeepSpeed can own it.

Generator (eq. 1-2): at every position whose next token is an item, cross-entropy of a softmax over the ITEM
vocabulary only (the LM head rows of the item tokens), weighted alpha when the target item is long-tail and
beta otherwise; the loss is sum(w * ce) / n_positions, so alpha = beta = 1 is the plain mean
("w/o long-tail loss" ablation) and alpha > 1 up-weights tail targets without rescaling the head.
Discriminator (eq. 3): cross-entropy of the full-vocabulary LM head at the answer position against the
"Yes"/"No" token.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llm_i2i.llm.scoring import decoder_of


def position_weights(target_columns: torch.Tensor, tail_mask: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    return torch.where(tail_mask[target_columns], torch.as_tensor(alpha), torch.as_tensor(beta)).to(torch.float32)


def generator_loss(
    hidden: torch.Tensor, item_weight: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """hidden [N, H] at target positions, item_weight [n_items, H], targets [N] item columns, weights [N].

    The reference formulation (materialises the [N, n_items] logits); `chunked_generator_loss` is the one
    training runs, and tests hold the two equal."""
    logits = hidden.float() @ item_weight.float().T
    ce = F.cross_entropy(logits, targets, reduction="none")
    return (weights * ce).sum() / max(len(targets), 1)


class _ChunkedItemCE(torch.autograd.Function):
    """sum_i scale_i * CE(hidden_i @ item_weight.T, target_i), computed `chunk` rows at a time.

    When a gradient is needed, the forward pass also computes it, chunk by chunk, while the chunk's logits are
    still in cache: the softmax is turned in place into scale * (softmax - onehot), which is then multiplied
    into d hidden and accumulated into d item_weight. That is the three matmuls of the plain formulation, but
    no [N, n_items] tensor is ever held (nor the log-softmax copies autograd would keep), and backward only
    scales the stored gradients by the incoming one. Without autograd (evaluation) only the loss is computed.
    """

    @staticmethod
    def forward(ctx, hidden, item_weight, targets, scale, chunk):
        n = hidden.shape[0]
        want_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        loss = hidden.new_zeros(())
        grad_hidden = torch.empty_like(hidden) if want_grad else None
        grad_weight = torch.zeros_like(item_weight) if want_grad else None
        buf = hidden.new_empty((min(chunk, n), item_weight.shape[0]))
        wt = item_weight.T
        for s in range(0, n, chunk):
            h, t, sc = hidden[s:s + chunk], targets[s:s + chunk, None], scale[s:s + chunk, None]
            logits = torch.mm(h, wt, out=buf[: len(h)])
            target_logit = logits.gather(1, t)
            top = logits.amax(1, keepdim=True)
            probs = logits.sub_(top).exp_()  # softmax numerator, in place
            total = probs.sum(1, keepdim=True)
            loss += (sc * (top + total.log() - target_logit)).sum()
            if want_grad:
                g = probs.mul_(sc / total).scatter_add_(1, t, -sc)  # scale * (softmax - onehot)
                torch.mm(g, item_weight, out=grad_hidden[s:s + chunk])
                grad_weight.addmm_(g.T, h)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_loss, grad_weight * grad_loss, None, None, None


def chunked_generator_loss(
    hidden: torch.Tensor, item_weight: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
    chunk: int = 256,
) -> torch.Tensor:
    """`generator_loss` without materialising the [N, n_items] logits (see `_ChunkedItemCE`); same value and
    gradients within fp32 rounding."""
    scale = weights.float() / max(len(targets), 1)
    return _ChunkedItemCE.apply(hidden.float(), item_weight.float(), targets, scale, chunk)


class SFTObjective(nn.Module):
    """forward(input_ids, attention_mask, labels) -> scalar loss for the generator or the discriminator.

    `item_loss` is the generator's item cross-entropy; an instance may set it to `generator_loss` (the
    materialising reference) to measure or test against it."""

    item_loss = staticmethod(chunked_generator_loss)

    def __init__(self, model, role: str, item_token_ids: np.ndarray, tail_mask: np.ndarray | None = None,
                 alpha: float = 4.0, beta: float = 1.0, answer_ids: tuple[int, int] | None = None):
        super().__init__()
        if role not in ("generator", "discriminator"):
            raise ValueError(f"role must be generator|discriminator, got {role!r}")
        self.model, self.role, self.alpha, self.beta = model, role, alpha, beta
        self.register_buffer("item_tokens", torch.as_tensor(item_token_ids, dtype=torch.long), persistent=False)
        tokens = np.asarray(item_token_ids, dtype=np.int64)
        contiguous = len(tokens) > 0 and np.array_equal(tokens, np.arange(tokens[0], tokens[0] + len(tokens)))
        # item tokens are normally one block of ids: a slice is a view, where indexing would copy the rows
        # every step and scatter their gradient back
        self.item_block = slice(int(tokens[0]), int(tokens[0]) + len(tokens)) if contiguous else None
        tail = np.zeros(len(item_token_ids), bool) if tail_mask is None else np.asarray(tail_mask, bool)
        self.register_buffer("tail_mask", torch.as_tensor(tail), persistent=False)
        yes, no = answer_ids if answer_ids is not None else (-1, -1)
        self.register_buffer("answer_tokens", torch.tensor([no, yes], dtype=torch.long), persistent=False)

    def item_rows(self, weight: torch.Tensor) -> torch.Tensor:
        """The LM-head rows of the item tokens, in item-column order."""
        return weight[self.item_block] if self.item_block is not None else weight[self.item_tokens]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = decoder_of(self.model)(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        w = self.model.get_output_embeddings().weight
        if self.role == "generator":
            sel = labels >= 0
            targets = labels[sel]
            weights = position_weights(targets, self.tail_mask, self.alpha, self.beta)
            return self.item_loss(h[sel], self.item_rows(w), targets, weights)
        last = attention_mask.sum(1) - 1
        logits = h[torch.arange(len(h), device=h.device), last].float() @ w.float().T
        return F.cross_entropy(logits, self.answer_tokens[labels])
