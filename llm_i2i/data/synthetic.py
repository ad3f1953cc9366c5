"""The embedded default dataset: no files needed, structure an I2I model and an LLM can both learn.

Items belong to latent groups (each with its own title vocabulary) and have power-law popularity.
A user prefers a few groups; each next click continues a within-group chain (sequential signal,
what Swing and a next-item LLM pick up), jumps to a popular item of a preferred group, or - with
probability `noise_rate` - is a uniformly random noise click, labelled in the `is_noise` column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from llm_i2i.data.dataset import Dataset
from llm_i2i.data.schema import ITEMS_SCHEMA, interaction_table

_ADJ = "red blue soft bold fresh pure deep bright light dark smooth rich warm cool classic mini".split()
_NOUNS = (
    "serum cream lotion polish brush mask gel balm oil spray powder shampoo soap tonic scrub mist "
    "puzzle robot doll truck blocks kite ball drone train plane boat car game card set kit"
).split()


@dataclass
class SyntheticConfig:
    n_users: int = 1500
    n_items: int = 400
    n_groups: int = 16
    groups_per_user: int = 2
    min_length: int = 5
    mean_extra_length: float = 5.0  # lengths are min_length + Poisson(mean_extra_length)
    zipf_exponent: float = 1.0  # item popularity ~ rank^-exponent within each group
    p_chain: float = 0.6  # next click continues the within-group chain
    noise_rate: float = 0.05
    seed: int = 0


def generate(cfg: SyntheticConfig) -> Dataset:
    rng = np.random.default_rng(cfg.seed)
    group_of = rng.integers(0, cfg.n_groups, cfg.n_items)
    members = [np.flatnonzero(group_of == g) for g in range(cfg.n_groups)]
    members = [m if len(m) else rng.integers(0, cfg.n_items, 1) for m in members]
    pop = [(np.arange(1, len(m) + 1) ** -cfg.zipf_exponent) for m in members]
    pop = [p / p.sum() for p in pop]
    # within-group chain: a fixed random successor per item
    successor = np.empty(cfg.n_items, dtype=np.int64)
    for m in members:
        perm = rng.permutation(m)
        successor[perm] = np.roll(perm, -1)
    group_pop = rng.dirichlet(np.ones(cfg.n_groups) * 0.7)

    users, items, ts, noise = [], [], [], []
    for u in range(cfg.n_users):
        prefs = rng.choice(cfg.n_groups, size=cfg.groups_per_user, replace=False, p=group_pop)
        length = cfg.min_length + rng.poisson(cfg.mean_extra_length)
        cur = -1
        for t in range(length):
            if rng.random() < cfg.noise_rate:
                item, is_noise = int(rng.integers(cfg.n_items)), True
            elif cur >= 0 and rng.random() < cfg.p_chain:
                item, is_noise = int(successor[cur]), False
            else:
                g = prefs[rng.integers(len(prefs))]
                item, is_noise = int(rng.choice(members[g], p=pop[g])), False
            if not is_noise:
                cur = item
            users.append(u + 1)
            items.append(item + 1)
            ts.append(t)
            noise.append(is_noise)
    n = len(users)
    inter = interaction_table(users, items, ts, is_noise=noise)
    used = np.unique(np.asarray(items))
    titles, cats = [], []
    for iid in used.tolist():
        j = iid - 1
        g = int(group_of[j])
        w = np.random.default_rng([cfg.seed, j])
        titles.append(f"{_ADJ[w.integers(len(_ADJ))]} {_NOUNS[g % len(_NOUNS)]} {_ADJ[g % len(_ADJ)]} no.{iid}")
        cats.append([f"Group {g}"])
    items_table = pa.table(
        {
            "item_id": pa.array(used, pa.int64()),
            "title": titles,
            "categories": cats,
            "text": [f"{t} | {c[0]}" for t, c in zip(titles, cats)],
        },
        schema=ITEMS_SCHEMA,
    )
    report = {"generator": "synthetic", "rows": n, "users": cfg.n_users, "noise_clicks": int(sum(noise))}
    return Dataset("synthetic", inter, items_table, report)
