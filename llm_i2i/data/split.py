"""Leave-one-out by time: each user's last item is the test target, the one before it validation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llm_i2i.data.sequences import Sequences


@dataclass
class LeaveOneOut:
    full: Sequences
    min_length: int = 3  # users shorter than this have no train/valid/test triple and are not evaluated

    @property
    def train(self) -> Sequences:
        """items[:-2] per user: the only data any model is fitted on by default."""
        return self.full.slice_each(stop=-2)

    @property
    def train_valid(self) -> Sequences:
        """items[:-1]: train + validation item (for refitting after model selection)."""
        return self.full.slice_each(stop=-1)

    def history(self, split: str) -> Sequences:
        """What a recommender may look at when predicting the `split` target."""
        return self.train if split == "valid" else self.train_valid

    def targets(self, split: str) -> np.ndarray:
        """Dense target item per user, -1 for users not evaluated."""
        if split not in ("valid", "test"):
            raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
        t = self.full.last(2 if split == "valid" else 1)
        return np.where(self.full.lengths >= self.min_length, t, -1)

    def report(self) -> dict[str, int]:
        short = int(np.sum(self.full.lengths < self.min_length))
        return {
            "users": self.full.n_users,
            "items": self.full.n_items,
            "interactions": int(self.full.indptr[-1]),
            "train_interactions": int(self.train.indptr[-1]),
            "users_not_evaluated_too_short": short,
        }


def leave_one_out(seqs: Sequences, min_length: int = 3) -> LeaveOneOut:
    return LeaveOneOut(seqs, min_length)
