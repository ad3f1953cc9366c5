"""The embedded dataset has the structure LLM-I2I exploits, and it is seeded."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from llm_i2i.data import leave_one_out, load_dataset
from llm_i2i.data.synthetic import SyntheticConfig, generate


@pytest.fixture(scope="module")
def default():
    return load_dataset(None)


def _by_user(ds):
    t = ds.interactions
    order = np.lexsort((t.column("timestamp").to_numpy(), t.column("user_id").to_numpy()))
    return (t.column("user_id").to_numpy()[order], t.column("item_id").to_numpy()[order],
            t.column("is_noise").to_numpy(zero_copy_only=False)[order])


def test_seeded_and_file_free(default):
    assert generate(SyntheticConfig()).interactions.equals(default.interactions)
    assert not generate(SyntheticConfig(seed=1)).interactions.equals(default.interactions)
    assert all(default.items.column("title").to_pylist())


def test_labelled_noise_breaks_the_series(default):
    users, items, noise = _by_user(default)
    assert 0.02 < noise.mean() < 0.1
    same_user = users[1:] == users[:-1]
    # a non-noise click is usually the next volume of the previous click's series; a noise click almost never is
    titles = dict(zip(default.items.column("item_id").to_pylist(), default.items.column("title").to_pylist()))

    def next_volume(a, b):
        ta, tb = titles[a].rsplit(" vol. ", 1), titles[b].rsplit(" vol. ", 1)
        return len(ta) == len(tb) == 2 and ta[0] == tb[0] and int(tb[1]) == int(ta[1]) + 1

    follows = np.array([next_volume(a, b) for a, b in zip(items[:-1], items[1:])])
    clean = same_user & ~noise[1:] & ~noise[:-1]
    assert follows[clean].mean() > 0.4
    assert follows[same_user & noise[1:]].mean() < 0.05


def test_long_tail_is_under_observed_in_training(default):
    """Late volumes sit mostly in the held-out clicks: items whose clicks are mostly in valid/test are common."""
    split = leave_one_out(default.sequences())
    train = split.train.item_counts()
    held_out = np.bincount(split.targets("test"), minlength=split.full.n_items) + \
        np.bincount(split.targets("valid"), minlength=split.full.n_items)
    total = train + held_out
    mostly_held_out = (held_out > train) & (total > 0)
    assert mostly_held_out.mean() > 0.2
    counts = np.sort(train)[::-1]
    assert counts[: len(counts) // 10].sum() > 0.3 * counts.sum()  # a popular head
    assert (train <= 2).mean() > 0.2  # and a sparse tail


def test_many_held_out_steps_are_next_volumes_swing_cannot_see(default):
    """The structure the generator can use and Swing cannot: many users' test click is the next volume after their
    validation click, yet at most one training user made that step (Swing needs a co-click by two users)."""
    titles = dict(zip(default.items.column("item_id").to_pylist(), default.items.column("title").to_pylist()))
    split = leave_one_out(default.sequences())
    full, train = split.full, split.train
    steps = Counter((a, b) for u in range(train.n_users) for a, b in zip(train.user(u)[:-1], train.user(u)[1:]))
    next_volume, unseen = [], []
    for u in range(full.n_users):
        a, b = full.user(u)[-2:]
        ta, tb = (titles[int(full.item_ids[i])].rsplit(" vol. ", 1) for i in (a, b))
        next_volume.append(len(ta) == len(tb) == 2 and ta[0] == tb[0] and int(tb[1]) == int(ta[1]) + 1)
        unseen.append(steps[(a, b)] <= 1)
    next_volume, unseen = np.array(next_volume), np.array(unseen)
    assert next_volume.mean() > 0.6
    assert (next_volume & unseen).mean() > 0.2


def test_bad_config_is_refused():
    for bad in ({"n_items": 2, "series_length": 5}, {"groups_per_user": 0}, {"p_chain": 1.5}):
        with pytest.raises(ValueError, match="synthetic"):
            generate(SyntheticConfig(**bad))
