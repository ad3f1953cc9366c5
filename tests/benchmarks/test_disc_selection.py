"""`benchmarks.disc_selection`: per-user choices against a brute-force sort, and the global cut's pair count."""

import numpy as np
import pyarrow as pa

from benchmarks.disc_selection import rank_within_user, selections


def scored_table(seed: int = 0, users: int = 30, per_user: int = 8) -> pa.Table:
    rng = np.random.default_rng(seed)
    u = np.repeat(np.arange(users), per_user)
    rank = np.tile(np.arange(per_user), users)
    conf = rng.random(len(u)).round(1)  # ties, broken by the generator's rank
    error = [None] * len(u)
    error[2] = "boom"  # user 0, generator rank 2
    perm = rng.permutation(len(u))
    return pa.table({"user_id": u[perm], "item_id": perm, "rank": rank[perm].astype(np.int32),
                     "confidence": conf[perm], "error": [error[i] for i in perm]})


def test_rank_within_user_matches_sorting_each_user():
    t = scored_table()
    users, conf, gen = (t.column(c).to_numpy(zero_copy_only=False) for c in ("user_id", "confidence", "rank"))
    got = rank_within_user(users, -conf, gen)
    for u in np.unique(users):
        rows = np.flatnonzero(users == u)
        want = sorted(rows, key=lambda r: (-conf[r], gen[r]))
        assert [got[r] for r in want] == list(range(len(rows)))


def test_every_chooser_keeps_n_per_user_or_as_many_pairs_and_never_a_failed_row():
    t = scored_table()
    keep = selections(t, 3)
    failed = np.asarray(t.column("error").is_valid())
    users = t.column("user_id").to_numpy()
    conf = t.column("confidence").to_numpy()
    total = int(keep["generator rank"].sum())
    assert total == 30 * 3 - 1  # the failed row was one user's generator top-3
    for name, mask in keep.items():
        assert not (mask & failed).any()
        if name != "global P(Yes) cut":
            assert np.bincount(users[mask]).max() == 3
    cut = keep["global P(Yes) cut"]
    assert cut.sum() == total and conf[cut].min() >= conf[~cut & ~failed].max()
    assert np.array_equal(keep["discriminator P(Yes)"], keep["discriminator P(Yes)"] & ~failed)
