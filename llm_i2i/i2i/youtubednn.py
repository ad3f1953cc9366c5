"""YoutubeDNN two-tower retrieval (Covington et al. 2016) as LLM-CF configures it, read out as an I2I index.

User tower: a 3-layer MLP over [user embedding ; mean of the last `history_length` item embeddings];
the item side is the same item embedding table. Trained with sampled softmax (the next item against
`num_negatives` uniformly drawn items shared by the batch, accidental hits masked), Adam with weight
decay, early-stopped on validation Recall@10 under full ranking over all trained items. Every prefix
of a user's train sequence is one example (target = next item, history = the <= 20 items before it).

The index: each item's cosine-nearest items in the best epoch's item embedding table. Items with no
training interaction keep a random embedding, so they are left out of the index entirely.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from llm_i2i.data.sequences import Sequences
from llm_i2i.i2i.base import I2IModel, Neighbors, cosine_neighbors
from llm_i2i.progress import log


@dataclass
class YoutubeDNNConfig:
    k: int = 200
    embedding_dim: int = 64
    history_length: int = 20
    hidden_dims: tuple[int, ...] = (256, 128, 64)  # user tower; the last must equal embedding_dim
    num_negatives: int = 500
    init_std: float = 0.05
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 256
    max_epochs: int = 30  # bounds a Beauty fit to a few minutes on 2 cores
    patience: int = 3  # epochs without a better valid Recall@10 before stopping
    seed: int = 0
    # 1 by default: the model is small and, on a busy 2-core box, torch's thread pool spins (measured
    # ~20 ms vs ~250 ms per step); 0 = leave torch's thread count (torch.set_num_threads) as it is
    num_threads: int = 1
    block_rows: int = 2048  # items (or users) scored per block in the full-ranking passes

    def validate(self) -> None:
        positive = ("k", "embedding_dim", "history_length", "num_negatives", "batch_size", "max_epochs", "patience", "block_rows")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"youtubednn.{name} must be positive, got {getattr(self, name)}")
        if not self.hidden_dims or self.hidden_dims[-1] != self.embedding_dim:
            raise ValueError(
                f"youtubednn.hidden_dims must end with embedding_dim={self.embedding_dim}, got {self.hidden_dims}"
            )
        if self.learning_rate <= 0 or self.weight_decay < 0 or self.init_std <= 0:
            raise ValueError("youtubednn: need learning_rate > 0, weight_decay >= 0, init_std > 0")
        if self.num_threads < 0:
            raise ValueError(f"youtubednn.num_threads must be >= 0, got {self.num_threads}")


def prefix_examples(train: Sequences, history_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One example per position t >= 1 of each user's sequence: (user, target = seq[t],
    history = seq[t-L:t] left-padded with n_items). Returns (users, targets, histories [n, L])."""
    lens = train.lengths
    users_of = np.repeat(np.arange(train.n_users, dtype=np.int64), lens)
    pos = np.arange(len(train.items), dtype=np.int64)
    starts = train.indptr[:-1][users_of]
    sel = pos > starts
    return users_of[sel], train.items[sel].astype(np.int64), _windows(train, pos[sel], starts[sel], history_length)


def last_histories(train: Sequences, history_length: int) -> np.ndarray:
    """The last `history_length` items of every user (left-padded with n_items): the input for the
    item that follows the whole sequence."""
    return _windows(train, train.indptr[1:], train.indptr[:-1], history_length)


def _windows(train: Sequences, ends: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    idx = ends[:, None] - length + np.arange(length)[None, :]
    ok = idx >= starts[:, None]
    return np.where(ok, train.items[np.clip(idx, 0, max(len(train.items) - 1, 0))] if len(train.items) else 0, train.n_items).astype(np.int64)


def _build_model(n_users: int, n_items: int, cfg: YoutubeDNNConfig):
    import torch
    from torch import nn

    class TwoTower(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            d = cfg.embedding_dim
            self.pad = n_items
            self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=n_items)
            self.user_emb = nn.Embedding(max(n_users, 1), d)
            for emb in (self.item_emb, self.user_emb):
                nn.init.normal_(emb.weight, std=cfg.init_std)
            with torch.no_grad():
                self.item_emb.weight[n_items].zero_()
            layers: list[nn.Module] = []
            width = 2 * d
            for i, h in enumerate(cfg.hidden_dims):
                layers.append(nn.Linear(width, h))
                if i < len(cfg.hidden_dims) - 1:
                    layers.append(nn.ReLU())
                width = h
            self.tower = nn.Sequential(*layers)

        def user_vectors(self, users, hist):
            mask = (hist != self.pad).unsqueeze(-1).to(self.item_emb.weight.dtype)
            mean = (self.item_emb(hist) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return self.tower(torch.cat([self.user_emb(users), mean], dim=1))

    return TwoTower()


def sampled_softmax_loss(user_vec, item_table, targets, negatives):
    """Cross-entropy of the target against shared negatives; a negative equal to the row's target
    (an accidental hit) is masked out."""
    import torch

    pos = (user_vec * item_table[targets]).sum(1, keepdim=True)
    neg = user_vec @ item_table[negatives].T
    neg = neg.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
    logits = torch.cat([pos, neg], dim=1)
    return torch.nn.functional.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long))


def full_ranking_recall(model, users, hist, targets, active, k: int, block_rows: int) -> float:
    """Recall@k of `targets` ranking all active items for each user (no history masking)."""
    import torch

    if len(users) == 0:
        return 0.0
    items = model.item_emb.weight[: len(active)]
    inactive = torch.from_numpy(~active)
    hits = 0
    with torch.no_grad():
        for s in range(0, len(users), block_rows):
            u = model.user_vectors(torch.from_numpy(users[s : s + block_rows]), torch.from_numpy(hist[s : s + block_rows]))
            scores = (u @ items.T).masked_fill(inactive[None, :], float("-inf"))
            top = torch.topk(scores, min(k, scores.shape[1]), dim=1).indices
            hits += int((top == torch.from_numpy(targets[s : s + block_rows])[:, None]).any(1).sum())
    return hits / len(users)


class YoutubeDNN(I2IModel):
    name = "youtubednn"

    def __init__(self, config: YoutubeDNNConfig | None = None):
        self.config = config or YoutubeDNNConfig()
        self.config.validate()
        self.item_embeddings: np.ndarray | None = None  # best epoch's [n_items, d]
        self.report: dict = {}

    def fit(self, train: Sequences, valid_targets: np.ndarray | None = None,
            n_real: np.ndarray | None = None) -> Neighbors:
        import torch

        cfg = self.config
        old_threads = torch.get_num_threads()
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        # Adam's moments of rarely-touched embedding rows decay into denormals, which made later
        # epochs ~5x slower on x86; flushing them to zero changes nothing that matters for ranking
        torch.set_flush_denormal(True)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                emb = self._train(train, valid_targets)
        finally:
            torch.set_num_threads(old_threads)
            torch.set_flush_denormal(False)
        self.item_embeddings = emb
        active = train.item_counts() > 0
        return cosine_neighbors(emb, cfg.k, train.item_ids, active=active, block_rows=cfg.block_rows)

    def _train(self, train: Sequences, valid_targets: np.ndarray | None) -> np.ndarray:
        import torch

        cfg = self.config
        n_items = train.n_items
        active = train.item_counts() > 0
        users, targets, hist = prefix_examples(train, cfg.history_length)
        model = _build_model(train.n_users, n_items, cfg)
        best_emb = model.item_emb.weight.detach()[:n_items].numpy().copy()
        self.report = {"examples": int(len(users)), "epochs": [], "best_epoch": None, "best_valid_recall@10": None}
        if len(users) == 0 or not active.any():
            return best_emb
        valid = None
        if valid_targets is not None:
            vt = np.asarray(valid_targets, np.int64)
            if len(vt) != train.n_users:
                raise ValueError(f"valid_targets has {len(vt)} entries for {train.n_users} users")
            vu = np.flatnonzero(vt >= 0)
            valid = (vu, last_histories(train, cfg.history_length)[vu], vt[vu])
        opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=True)
        gen = torch.Generator().manual_seed(cfg.seed)
        active_items = torch.from_numpy(np.flatnonzero(active))
        t_users, t_targets, t_hist = map(torch.from_numpy, (users, targets, hist))
        best, stale = -1.0, 0
        for epoch in range(1, cfg.max_epochs + 1):
            t0 = time.perf_counter()
            model.train()
            order = torch.randperm(len(users), generator=gen)
            total = 0.0
            for s in range(0, len(order), cfg.batch_size):
                b = order[s : s + cfg.batch_size]
                neg = active_items[torch.randint(len(active_items), (cfg.num_negatives,), generator=gen)]
                loss = sampled_softmax_loss(model.user_vectors(t_users[b], t_hist[b]), model.item_emb.weight, t_targets[b], neg)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(b)
            model.eval()
            rec = full_ranking_recall(model, *valid, active, 10, cfg.block_rows) if valid else None
            secs = time.perf_counter() - t0
            self.report["epochs"].append({"epoch": epoch, "loss": total / len(users), "valid_recall@10": rec, "seconds": secs})
            log.info(
                f"youtubednn epoch {epoch}/{cfg.max_epochs}: loss {total / len(users):.4f}"
                + (f" | valid R@10 {rec:.4f}" if rec is not None else "")
                + f" | {len(users) / secs:,.0f} examples/s"
            )
            if rec is None or rec > best:
                best, stale = (rec if rec is not None else best), 0
                best_emb = model.item_emb.weight.detach()[:n_items].numpy().copy()
                self.report["best_epoch"] = epoch
            else:
                stale += 1
                if stale >= cfg.patience:
                    log.info(f"youtubednn: early stop after epoch {epoch} (best epoch {self.report['best_epoch']})")
                    break
        self.report["best_valid_recall@10"] = best if valid else None
        return best_emb
