"""BPR matrix factorisation (benfred/implicit, CPU) turned into item-item neighbours, as the paper ran it.

implicit's BPR learns `factors` latent dimensions plus one item-bias column (user side fixed to 1);
the neighbours of an item are the cosine-nearest rows of that full item matrix, which is what
implicit's own `similar_items` ranks by. Items with no training interactions keep implicit's all-zero
factors and therefore get no neighbours and are nobody's neighbour.

Determinism: with `num_threads=1` (default) implicit's Hogwild SGD is sequential and seeded by `seed`,
so two fits give identical factors; more threads are faster but race.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llm_i2i.data.sequences import Sequences
from llm_i2i.i2i.base import I2IModel, Neighbors, cosine_neighbors
from llm_i2i.i2i.bm25 import user_item_counts


@dataclass
class BPRConfig:
    k: int = 200
    factors: int = 100
    learning_rate: float = 0.01
    regularization: float = 0.01
    iterations: int = 100
    seed: int = 0
    num_threads: int = 1  # 1 = reproducible; >1 = Hogwild (faster, not bit-reproducible)
    verify_negative_samples: bool = True
    block_rows: int = 2048  # items scored per block when ranking cosine neighbours

    def validate(self) -> None:
        if self.k <= 0:
            raise ValueError(f"bpr.k must be positive, got {self.k}")
        if self.factors <= 0 or self.iterations <= 0:
            raise ValueError(f"bpr.factors and bpr.iterations must be positive, got {self.factors}, {self.iterations}")
        if self.learning_rate <= 0 or self.regularization < 0:
            raise ValueError("bpr: need learning_rate > 0 and regularization >= 0")
        if self.num_threads < 0 or self.block_rows <= 0:
            raise ValueError("bpr: need num_threads >= 0 and block_rows > 0")


class BPR(I2IModel):
    name = "bpr"

    def __init__(self, config: BPRConfig | None = None):
        self.config = config or BPRConfig()
        self.config.validate()
        self.item_factors: np.ndarray | None = None  # [n_items, factors + 1], kept for inspection/tests
        self.report: dict = {}

    def fit(self, train: Sequences, valid_targets: np.ndarray | None = None,
            n_real: np.ndarray | None = None) -> Neighbors:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        cfg = self.config
        counts = user_item_counts(train)
        model = BayesianPersonalizedRanking(
            factors=cfg.factors, learning_rate=cfg.learning_rate, regularization=cfg.regularization,
            dtype=np.float32, iterations=cfg.iterations, num_threads=cfg.num_threads,
            verify_negative_samples=cfg.verify_negative_samples, random_state=cfg.seed,
        )
        if counts.nnz:
            model.fit(counts, show_progress=False)
            self.item_factors = np.asarray(model.item_factors, np.float64)
        else:
            self.item_factors = np.zeros((train.n_items, cfg.factors + 1))
        trained = np.bincount(counts.indices, minlength=train.n_items) > 0
        self.report = {"user_item_pairs": int(counts.nnz), "items_without_interactions": int((~trained).sum())}
        return cosine_neighbors(self.item_factors, cfg.k, train.item_ids, active=trained, block_rows=cfg.block_rows)
