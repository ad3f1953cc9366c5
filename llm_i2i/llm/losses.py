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
    """hidden [N, H] at target positions, item_weight [n_items, H], targets [N] item columns, weights [N]."""
    logits = hidden.float() @ item_weight.float().T
    ce = F.cross_entropy(logits, targets, reduction="none")
    return (weights * ce).sum() / max(len(targets), 1)


class SFTObjective(nn.Module):
    """forward(input_ids, attention_mask, labels) -> scalar loss for the generator or the discriminator."""

    def __init__(self, model, role: str, item_token_ids: np.ndarray, tail_mask: np.ndarray | None = None,
                 alpha: float = 4.0, beta: float = 1.0, answer_ids: tuple[int, int] | None = None):
        super().__init__()
        if role not in ("generator", "discriminator"):
            raise ValueError(f"role must be generator|discriminator, got {role!r}")
        self.model, self.role, self.alpha, self.beta = model, role, alpha, beta
        self.register_buffer("item_tokens", torch.as_tensor(item_token_ids, dtype=torch.long), persistent=False)
        tail = np.zeros(len(item_token_ids), bool) if tail_mask is None else np.asarray(tail_mask, bool)
        self.register_buffer("tail_mask", torch.as_tensor(tail), persistent=False)
        yes, no = answer_ids if answer_ids is not None else (-1, -1)
        self.register_buffer("answer_tokens", torch.tensor([no, yes], dtype=torch.long), persistent=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = decoder_of(self.model)(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        w = self.model.get_output_embeddings().weight
        if self.role == "generator":
            sel = labels >= 0
            targets = labels[sel]
            weights = position_weights(targets, self.tail_mask, self.alpha, self.beta)
            return generator_loss(h[sel], w[self.item_tokens], targets, weights)
        last = attention_mask.sum(1) - 1
        logits = h[torch.arange(len(h), device=h.device), last].float() @ w.float().T
        return F.cross_entropy(logits, self.answer_tokens[labels])
