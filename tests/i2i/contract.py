"""The contract every I2I backbone must meet, as a mixin (like implicit's RecommenderBaseTestMixin).

Use: `class TestFoo(BackboneContract): backbone = "foo"; fast_config = {...}`. The class attributes:
  backbone      registry name (llm_i2i.i2i.BACKBONES)
  fast_config   overrides that make a fit take well under a second on the tiny fixtures
  seeded        True if the config has a `seed` that the fit depends on
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest

from llm_i2i.i2i import backbone_classes, make_backbone
from llm_i2i.i2i.base import I2IModel, Neighbors
from tests.conftest import sequences_from_lists

N_ACTIVE = 15  # items 0..14 get interactions
N_ITEMS = 17  # items 15, 16 never occur


def random_train():
    rng = np.random.default_rng(7)
    hist = [list(rng.integers(0, N_ACTIVE, size=rng.integers(3, 9))) for _ in range(40)]
    return sequences_from_lists(hist, n_items=N_ITEMS)


def tie_prone_train():
    """Identical users and mirrored items: co-occurrence scores tie exactly."""
    hist = [[0, 1, 2]] * 4 + [[3, 4]] * 2 + [[4, 5]] * 2 + [[0, 5]]
    return sequences_from_lists(hist, n_items=6)


def two_cluster_train(cluster_size: int = 8, users_per_cluster: int = 40):
    """Users only ever touch one of two disjoint item clusters, so no cross-cluster co-occurrence."""
    rng = np.random.default_rng(3)
    hist = []
    for c in range(2):
        for _ in range(users_per_cluster):
            items = rng.choice(cluster_size, size=5, replace=False) + c * cluster_size
            hist.append(list(items))
    return sequences_from_lists(hist, n_items=2 * cluster_size)


def assert_well_formed(nb: Neighbors, item_ids: np.ndarray, k: int) -> None:
    n = len(item_ids)
    assert nb.indptr.dtype == np.int64 and nb.indptr.shape == (n + 1,)
    assert nb.neighbors.dtype == np.int32 and nb.scores.dtype == np.float64
    assert nb.indptr[0] == 0 and nb.indptr[-1] == len(nb.neighbors) == len(nb.scores)
    assert np.all(np.diff(nb.indptr) >= 0)
    np.testing.assert_array_equal(nb.item_ids, item_ids)
    assert np.all(np.isfinite(nb.scores))
    for i in range(n):
        idx, sc = nb.row(i)
        assert len(idx) <= k, f"item {i}: {len(idx)} neighbours > k={k}"
        assert np.all((idx >= 0) & (idx < n)), f"item {i}: neighbour out of range"
        assert i not in idx, f"item {i} lists itself"
        assert len(np.unique(idx)) == len(idx), f"item {i}: duplicate neighbours"
        order = np.lexsort((idx, -sc))
        np.testing.assert_array_equal(order, np.arange(len(idx)), err_msg=f"item {i}: not sorted by (score desc, index)")


class BackboneContract:
    backbone: ClassVar[str]
    fast_config: ClassVar[dict[str, Any]] = {}
    seeded: ClassVar[bool] = True

    def make(self, k: int = 4, seed: int = 0, **extra: Any) -> I2IModel:
        overrides = {**self.fast_config, "k": k, **extra}
        if self.seeded:
            overrides["seed"] = seed
        return make_backbone(self.backbone, overrides=overrides)

    def fit(self, train, k: int = 4, seed: int = 0, **extra: Any) -> Neighbors:
        return self.make(k, seed, **extra).fit(train)

    def test_registered_under_its_name(self):
        model_cls, cfg_cls = backbone_classes(self.backbone)
        assert model_cls.name == self.backbone
        assert isinstance(self.make(), model_cls) and isinstance(self.make().config, cfg_cls)

    def test_rejects_nonpositive_k(self):
        with pytest.raises(ValueError, match="k"):
            self.make(k=0)

    @pytest.mark.parametrize("k", [1, 4])
    def test_output_well_formed_and_k_respected(self, k):
        train = random_train()
        nb = self.fit(train, k=k)
        assert_well_formed(nb, train.item_ids, k)
        assert np.diff(nb.indptr)[:N_ACTIVE].max() == k, "k should be reached on a dense random catalogue"

    def test_ties_broken_by_item_index(self):
        train = tie_prone_train()
        assert_well_formed(self.fit(train, k=5), train.item_ids, 5)

    def test_deterministic_with_same_seed(self):
        train = random_train()
        a, b = self.fit(train, seed=11), self.fit(train, seed=11)
        np.testing.assert_array_equal(a.indptr, b.indptr)
        np.testing.assert_array_equal(a.neighbors, b.neighbors)
        np.testing.assert_array_equal(a.scores, b.scores)

    def test_seed_is_used(self):
        if not self.seeded:
            pytest.skip(f"{self.backbone} has no seed")
        train = random_train()
        a, b = self.fit(train, seed=1), self.fit(train, seed=2)
        assert not np.array_equal(a.scores, b.scores)

    def test_items_without_interactions_have_no_neighbours_and_are_nobodys(self):
        nb = self.fit(random_train())
        absent = np.arange(N_ACTIVE, N_ITEMS)
        assert all(len(nb.row(i)[0]) == 0 for i in absent)
        assert not np.isin(nb.neighbors, absent).any()

    def test_planted_clusters_recovered(self):
        size = 8
        train = two_cluster_train(size)
        nb = self.fit(train, k=4)
        for i in range(train.n_items):
            idx, _ = nb.row(i)
            assert len(idx) > 0, f"item {i} got no neighbours"
            assert np.all(idx // size == i // size), f"item {i} (cluster {i // size}) has neighbours {idx.tolist()}"

    def test_table_round_trip(self):
        nb = self.fit(random_train())
        back = Neighbors.from_table(nb.to_table(), item_ids=nb.item_ids)
        np.testing.assert_array_equal(back.indptr, nb.indptr)
        np.testing.assert_array_equal(back.neighbors, nb.neighbors)
        np.testing.assert_allclose(back.scores, nb.scores.astype(np.float32), rtol=0)
