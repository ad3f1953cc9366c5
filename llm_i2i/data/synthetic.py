"""The embedded default dataset: file-free, seeded, small, with the structure LLM-I2I exploits.

The catalogue is a set of *series* (think volumes of a book series or steps of a skincare routine): each
series is `series_length` items in a fixed order, belongs to one of `n_groups` categories, and its title
names the series and the volume. A user prefers `groups_per_user` categories; a session starts a series
at volume 1 (series popularity ~ rank^-`zipf_exponent` within the category) and continues to the next
volume with probability `p_chain`, else starts another series. With probability `noise_rate` a click is
a uniformly random item instead, labelled in the `is_noise` column.

What the method can use, and a plain I2I model cannot:

* a sparse long tail under-observed in the training split: histories are short and every series starts
  at volume 1, so later volumes sit mostly in users' held-out last clicks; the training split holds few
  co-clicks of consecutive late volumes, which Swing needs from at least two users;
* predictable from the sequence (volume k is followed by volume k+1, learnt from the users who went on)
  and from the text (the title names the series and the volume): with 300 series for 3,000 users, many
  next-volume steps were made by only one training user - enough for the generator, which learns from every
  step, too few for Swing, which needs a co-click by two users;
* users whose recent items imply items they have not clicked yet: a user whose training history ends at
  volume k will click volume k+1 with probability `p_chain`;
* labelled noise, unrelated to the history, which a discriminator learns to reject.
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
    n_users: int = 3000
    n_items: int = 1500
    n_groups: int = 16  # categories; each series belongs to one
    series_length: int = 5  # items per series, clicked in order
    groups_per_user: int = 2
    min_length: int = 3  # vs 4: the higher mean validation lift over 3 seeds (docs/quickstart.md)
    mean_extra_length: float = 1.5  # history lengths are min_length + Poisson(mean_extra_length)
    zipf_exponent: float = 0.6  # series popularity ~ rank^-exponent within its category
    p_chain: float = 0.85  # the next click is the next volume of the current series
    noise_rate: float = 0.05  # a uniformly random click, labelled is_noise
    seed: int = 0

    def validate(self) -> None:
        if self.n_users < 1 or self.n_groups < 1 or self.series_length < 1 or self.min_length < 1:
            raise ValueError("synthetic: n_users, n_groups, series_length and min_length must be >= 1")
        if self.n_items < self.series_length:
            raise ValueError(f"synthetic: n_items {self.n_items} < series_length {self.series_length}")
        if not 1 <= self.groups_per_user <= self.n_groups:
            raise ValueError(f"synthetic: groups_per_user must be in [1, n_groups], got {self.groups_per_user}")
        if not (0 <= self.p_chain <= 1 and 0 <= self.noise_rate <= 1):
            raise ValueError("synthetic: p_chain and noise_rate must be in [0, 1]")


def generate(cfg: SyntheticConfig) -> Dataset:
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    n_series = cfg.n_items // cfg.series_length
    volumes = rng.permutation(cfg.n_items)[: n_series * cfg.series_length].reshape(n_series, cfg.series_length)
    group_of = rng.integers(0, cfg.n_groups, n_series)
    series_in = [np.flatnonzero(group_of == g) for g in range(cfg.n_groups)]
    series_in = [s if len(s) else rng.integers(0, n_series, 1) for s in series_in]
    series_pop = [np.arange(1, len(s) + 1) ** -cfg.zipf_exponent for s in series_in]
    series_pop = [p / p.sum() for p in series_pop]
    group_pop = rng.dirichlet(np.ones(cfg.n_groups) * 2.0)

    users, items, noise = [], [], []
    lengths = cfg.min_length + rng.poisson(cfg.mean_extra_length, cfg.n_users)
    for u in range(cfg.n_users):
        prefs = rng.choice(cfg.n_groups, size=cfg.groups_per_user, replace=False, p=group_pop)
        series, volume = -1, 0
        for _ in range(lengths[u]):
            if rng.random() < cfg.noise_rate:
                items.append(int(rng.integers(cfg.n_items)))
                noise.append(True)
            else:
                if series >= 0 and volume + 1 < cfg.series_length and rng.random() < cfg.p_chain:
                    volume += 1
                else:
                    g = prefs[rng.integers(len(prefs))]
                    series, volume = int(series_in[g][rng.choice(len(series_in[g]), p=series_pop[g])]), 0
                items.append(int(volumes[series, volume]))
                noise.append(False)
            users.append(u + 1)
    n = len(users)
    item_ids = np.asarray(items, np.int64) + 1
    timestamps = np.arange(n) - np.repeat(np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    inter = interaction_table(users, item_ids, timestamps, is_noise=noise)
    position = np.full((cfg.n_items, 2), -1, np.int64)  # item -> (series, volume); -1 outside every series
    position[volumes.ravel()] = np.stack(np.divmod(np.arange(volumes.size), cfg.series_length), 1)
    used = np.unique(item_ids)
    titles, cats = [], []
    for iid in used.tolist():
        s, v = position[iid - 1]
        g = int(group_of[s]) if s >= 0 else int(rng.integers(cfg.n_groups))
        name = f"{_ADJ[s % len(_ADJ)]} {_NOUNS[g % len(_NOUNS)]} series {s}" if s >= 0 else f"{_NOUNS[g % len(_NOUNS)]}"
        titles.append(f"{name} vol. {v + 1}" if s >= 0 else f"{name} no.{iid}")
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
    report = {"generator": "synthetic", "rows": n, "users": cfg.n_users, "series": n_series,
              "noise_clicks": int(sum(noise))}
    return Dataset("synthetic", inter, items_table, report)
