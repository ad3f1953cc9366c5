"""SFT examples built from the TRAIN split only, rendered through `prompts.py`, plus batching and collation.

Generator: one example per user sequence (long ones split into chunks of at most `max_items` items, newest
chunk last, nothing dropped); every token followed by an item token carries that item as its label
(the item's column in the tokenizer's item order) - teacher forcing over all positions in one pass.
Discriminator: positives are (history prefix, next item) at up to `positions_per_user` positions per user
(always including the last); each positive gets `neg_ratio` negatives, never an item the user touched in train,
drawn by `SFTConfig.negatives`:
- `random`: uniform over the catalogue (the paper's);
- `popular`: another positive's item, so every item is as likely a negative as a positive. Popularity then tells
  them apart no better than chance and a model cannot learn "popular means Yes" (against uniform negatives,
  popularity alone reaches ROC-AUC 0.72 on Toys);
- `hard`: the Swing neighbours of the user's last history item;
- `generator`: the starting generator's own top predictions for that history (what its wrong candidates look like
  at inference, which is what the discriminator filters).
Several sources joined with "+" (`random+generator`) draw each negative from one of them, chosen uniformly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm_i2i.data import LeaveOneOut, leave_one_out, load_dataset, long_tail_mask
from llm_i2i.data.schema import DataError
from llm_i2i.data.sequences import Sequences
from llm_i2i.io import sha256_file
from llm_i2i.llm.bases import resolve_base_model
from llm_i2i.llm.prompts import discriminator_prompt, encode_prompts, generator_prompt, titles_from_items
from llm_i2i.llm.sft_config import SFTConfig, negative_sources
from llm_i2i.llm.tokenizer import item_vocabulary
from llm_i2i.progress import log


@dataclass
class SFTExamples:
    input_ids: list[np.ndarray]
    labels: list[np.ndarray]  # generator: per-token item column or -1; discriminator: [1] or [0]
    report: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.input_ids], dtype=np.int64)


def _check_vocab(seqs: Sequences, tokenizer) -> None:
    ids, _ = item_vocabulary(tokenizer)
    if not np.array_equal(ids, seqs.item_ids):
        raise ValueError(f"tokenizer knows {len(ids)} items but the dataset has {seqs.n_items}; build the tokenizer on this dataset's items")


def generator_examples(train: Sequences, tokenizer, max_items: int = 50, titles=None) -> SFTExamples:
    _check_vocab(train, tokenizer)
    _, tids = item_vocabulary(tokenizer)
    col_of_token = {int(t): c for c, t in enumerate(tids)}
    chunks: list[np.ndarray] = []
    split_users = 0
    for u in range(train.n_users):
        seq = train.user(u)
        if len(seq) == 0:
            continue
        starts = list(range(len(seq), 0, -max_items))[::-1]
        split_users += len(starts) > 1
        for end in starts:
            chunks.append(seq[max(0, end - max_items) : end])
    prompts = [generator_prompt(train.item_ids[c].tolist(), titles=titles, max_history=None) for c in chunks]
    ids = encode_prompts(tokenizer, prompts)
    input_ids, labels = [], []
    for seq in ids:
        arr = np.asarray(seq, dtype=np.int64)
        lab = np.full(len(arr), -1, dtype=np.int64)
        nxt = [col_of_token.get(int(t), -1) for t in arr[1:]]
        lab[:-1] = nxt
        # the last token has no next token; drop it from the input (it only ever serves as a target)
        input_ids.append(arr[:-1])
        labels.append(lab[:-1])
    n_targets = int(sum((lab >= 0).sum() for lab in labels))
    report = {"sequences": len(chunks), "users_split_into_chunks": int(split_users), "targets": n_targets,
              "train_interactions": int(train.indptr[-1])}
    if n_targets != report["train_interactions"]:
        raise AssertionError(f"generator examples cover {n_targets} targets, train has {report['train_interactions']}")
    return SFTExamples(input_ids, labels, report)


HARD_POOL = 50  # Swing neighbours of the last item a hard negative is drawn from
GENERATOR_POOL = 10  # the generator's top predictions a `generator` negative is drawn from


def discriminator_pairs(
    seqs: Sequences,
    positions_per_user: int,
    neg_ratio: int,
    rng: np.random.Generator,
    negatives: str = "random",
    hard_neighbors=None,
    generator_top=None,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, int]:
    """(histories as dense items, candidate dense items, labels, negatives that fell back to random because their
    pool held only items the user touched). `hard_neighbors` (Swing) serves `hard`; `generator_top` (histories ->
    [n, k] dense items, best first) serves `generator`, called once on all its histories at the end; `popular`
    negatives are drawn at the end too, from every positive drawn."""
    sources = negative_sources(negatives)
    if "hard" in sources and hard_neighbors is None or "generator" in sources and generator_top is None:
        raise ValueError(f"negatives={negatives!r} needs {'hard_neighbors' if 'hard' in sources else 'generator_top'}")
    hist, cand, label, deferred = [], [], [], []
    n_items = seqs.n_items
    fell_back = 0

    def unseen(seen: set) -> int:
        neg = -1
        while neg < 0 or neg in seen:
            neg = int(rng.integers(n_items))
        return neg

    def popular(positives: np.ndarray, seen: set) -> int:
        nonlocal fell_back
        for _ in range(100):
            neg = int(positives[rng.integers(len(positives))])
            if neg not in seen:
                return neg
        fell_back += 1  # the user touched (nearly) every item that is anyone's positive
        return unseen(seen)

    def from_pool(pool, seen: set) -> int:
        nonlocal fell_back
        pool = [j for j in pool if j not in seen]
        if pool:
            return int(rng.choice(pool))
        fell_back += 1
        return unseen(seen)

    for u in range(seqs.n_users):
        seq = seqs.user(u)
        if len(seq) < 2:
            continue
        seen = set(seq.tolist())
        pos = np.arange(1, len(seq))
        if len(pos) > positions_per_user:
            pos = np.concatenate([rng.choice(pos[:-1], positions_per_user - 1, replace=False), pos[-1:]])
        for t in pos:
            h = seq[:t]
            hist.append(h)
            cand.append(seq[t])
            label.append(1)
            for _ in range(neg_ratio):
                hist.append(h)
                label.append(0)
                source = sources[0] if len(sources) == 1 else sources[int(rng.integers(len(sources)))]
                if source in ("generator", "popular"):  # drawn once every positive is known
                    deferred.append((len(cand), seen, source))
                    cand.append(-1)
                elif source == "hard":
                    cand.append(from_pool(hard_neighbors.row(int(h[-1]))[0][:HARD_POOL].tolist(), seen))
                else:
                    cand.append(unseen(seen))
    positives = np.asarray(cand, np.int64)[np.asarray(label, bool)] if label else np.zeros(0, np.int64)
    for i, seen, _ in (d for d in deferred if d[2] == "popular"):
        cand[i] = popular(positives, seen)
    wanted = [(i, seen) for i, seen, source in deferred if source == "generator"]
    if wanted:
        top = generator_top([hist[i] for i, _ in wanted])
        for (i, seen), row in zip(wanted, top):
            cand[i] = from_pool(row.tolist(), seen)
    return hist, np.asarray(cand, np.int64), np.asarray(label, np.int64), fell_back


def generator_predictions(checkpoint: str | Path, seqs: Sequences, max_history: int, k: int = GENERATOR_POOL):
    """`generator_top` for `discriminator_pairs`: the generator checkpoint's top-k next items (dense) per history."""
    from llm_i2i.llm.modeling import load_checkpoint
    from llm_i2i.llm.scoring import next_item_scores, topn_items

    model, tok, manifest = load_checkpoint(checkpoint)
    role = manifest.get("sft_config", {}).get("role")
    if role != "generator":
        raise ValueError(f"sft.negatives=generator draws from the starting model's predictions, but {checkpoint} is "
                         f"not a generator checkpoint (role {role!r}); start the discriminator from the generator")
    ids, _ = item_vocabulary(tok)
    if not np.array_equal(ids, seqs.item_ids):
        raise ValueError(f"{checkpoint}: the generator knows {len(ids)} items but the dataset has {seqs.n_items}")

    def top(histories: list[np.ndarray]) -> np.ndarray:
        ext = [seqs.item_ids[h].tolist() for h in histories]
        return topn_items(next_item_scores(model, tok, ext, max_history=max_history), k)[0]

    return top


def discriminator_examples(
    train: Sequences,
    tokenizer,
    positions_per_user: int = 3,
    neg_ratio: int = 1,
    max_history: int = 10,
    seed: int = 0,
    negatives: str = "random",
    hard_neighbors=None,
    generator_top=None,
    titles=None,
) -> SFTExamples:
    _check_vocab(train, tokenizer)
    rng = np.random.default_rng(seed)
    hist, cand, label, fell_back = discriminator_pairs(train, positions_per_user, neg_ratio, rng, negatives,
                                                       hard_neighbors, generator_top)
    ext = train.item_ids
    prompts = [discriminator_prompt(ext[h].tolist(), int(ext[c]), titles=titles, max_history=max_history) for h, c in zip(hist, cand)]
    ids = encode_prompts(tokenizer, prompts)
    report = {"examples": len(ids), "positives": int(label.sum()), "negatives": int((label == 0).sum()),
              "negatives_from": negatives, "negatives_fell_back_to_random": fell_back}
    return SFTExamples([np.asarray(x, np.int64) for x in ids], [np.array([v]) for v in label], report)


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[np.ndarray]:
    """Shuffled batches of similar-length examples (less padding); every rank gets the same number of batches."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    mega = batch_size * 50
    batches = []
    for s in range(0, len(order), mega):
        block = order[s : s + mega]
        block = block[np.argsort(lengths[block], kind="stable")]
        batches += [block[i : i + batch_size] for i in range(0, len(block), batch_size)]
    batches = [batches[i] for i in rng.permutation(len(batches))]
    usable = len(batches) - len(batches) % world
    return batches[rank:usable:world]


def collate(examples: SFTExamples, idx: np.ndarray, pad_id: int, role: str) -> dict[str, torch.Tensor]:
    seqs = [examples.input_ids[i] for i in idx]
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = s
        mask[r, : len(s)] = 1
    out = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
    if role == "generator":
        lab = np.full((len(seqs), width), -1, dtype=np.int64)
        for r, i in enumerate(idx):
            lab[r, : len(examples.labels[i])] = examples.labels[i]
        out["labels"] = torch.from_numpy(lab)
    else:
        out["labels"] = torch.from_numpy(np.array([examples.labels[i][0] for i in idx], dtype=np.int64))
    return out



def content_fingerprint(path: str | Path) -> str:
    """sha256 over the relative names and bytes of every file under `path` (or of the file itself).

    Covers what a reused or resumed SFT run was trained on, so changed data or a changed base checkpoint is a
    different run. The synthetic default dataset is named, not read."""
    if str(path) in ("default", "synthetic"):
        return f"builtin:{path}"
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    h = hashlib.sha256()
    for q in files:
        h.update(f"{q.relative_to(p) if p.is_dir() else q.name}\0{sha256_file(q)}\n".encode())
    return h.hexdigest()[:16]


@dataclass
class Prepared:
    """Everything a training process needs, built deterministically from the dataset dir."""

    tokenizer: Any
    items: Any
    split: LeaveOneOut
    examples: SFTExamples
    tail_mask: np.ndarray  # over item columns (= dense item indices)
    titles: dict[int, str] | None


def swing_neighbors(train):
    """Swing top-50 neighbours: the source of hard negatives."""
    from llm_i2i.i2i.swing import Swing, SwingConfig

    return Swing(SwingConfig(k=50)).fit(train)


def prepare_sft(cfg: SFTConfig, dataset_dir: str | Path, tokenizer) -> Prepared:
    ds = load_dataset(dataset_dir)
    split = leave_one_out(ds.sequences())
    train = split.train
    titles = titles_from_items(ds.items) if cfg.titles else None
    if cfg.role == "generator":
        prefix = len(encode_prompts(tokenizer, [generator_prompt([], titles=titles)])[0])
        per_item = 1 if titles is None else 2 + int(np.mean([len(t.split()) for t in titles.values()]) * 1.5)
        examples = generator_examples(train, tokenizer, max_items=max(1, (cfg.max_length - prefix) // per_item + 1), titles=titles)
    else:
        sources = negative_sources(cfg.negatives)
        hard = swing_neighbors(train) if "hard" in sources else None
        top = None
        if "generator" in sources:
            if not cfg.model.base_model:
                raise ValueError("sft.negatives=generator draws from the starting generator's predictions: start the "
                                 "discriminator from a generator checkpoint (model.base_model; the pipeline does "
                                 "with discriminator_from_generator)")
            top = generator_predictions(resolve_base_model(cfg.model.base_model), train, cfg.max_history)
        examples = discriminator_examples(train, tokenizer, cfg.positions_per_user, cfg.neg_ratio, cfg.max_history,
                                          cfg.seed, cfg.negatives, hard, top, titles=titles)
    tail = long_tail_mask(train.item_counts(), cfg.long_tail_fraction)
    log.info(f"SFT {cfg.role}: {examples.report}")
    return Prepared(tokenizer, ds.items, split, examples, tail, titles)
