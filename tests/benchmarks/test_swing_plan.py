"""The two-level plan and the cost model beside the Swing benchmark: the simulated plan gives exactly the
single-node answer, its byte counts match the shipped arrays, and the model scales as fitted."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.swing_plan import ClusterSpec, CostModel, node_subgraph, plan_two_level, simulate_two_level
from llm_i2i.i2i.swing import swing_topk
from tests.i2i.test_swing_sharded import CASES, _graph


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(sorted(CASES)), st.sampled_from([1, 2, 7]))
def test_two_level_simulation_equals_single_node(seed, case, nodes):
    _, c, g = _graph(seed, case)
    ref_idx, ref_sc, ref_steps = swing_topk(g, c.k, c.alpha2)
    idx, sc, steps, plan = simulate_two_level(g, nodes, c.k, c.alpha2)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(sc, ref_sc, rtol=1e-9, atol=0)
    assert steps == ref_steps
    assert len(plan.nodes) == nodes and sum(n.items for n in plan.nodes) == g.n_items


def test_two_level_plan_bytes_match_shipped_arrays():
    _, _, g = _graph(3, "power_law")
    plan = plan_two_level(g, 3)
    for p, node in enumerate(plan.nodes):
        sub, users = node_subgraph(g, int(plan.bounds[p]), int(plan.bounds[p + 1]))
        assert node.users == len(users)
        assert node.user_list_bytes == sub.user_items.nbytes + sub.user_indptr.nbytes + sub.user_weight.nbytes
        assert node.item_list_bytes == sub.item_users.nbytes + 8 * (node.items + 1)
    # one node holds every user that clicked something: no replication beyond the graph itself
    assert plan_two_level(g, 1).replication <= 1.0 + 1e-12
    assert plan.replication >= plan_two_level(g, 1).replication


def test_cost_model_scales_and_switches_plan():
    model = CostModel(steps_per_edge=100.0, steps_per_s_per_core=1e8, graph_bytes_per_edge=10.0, replication=1.5)
    cluster = ClusterSpec(cores_per_node=10, memory_per_node_bytes=1e9, object_store_fraction=0.5)
    small = model.estimate(1e7, cluster)  # 1e8 bytes fit one 5e8-byte store
    big = model.estimate(1e9, cluster)  # 1e10 bytes x 1.5 replication -> 30 nodes
    assert small["nodes"] == 1 and small["bytes_shuffled"] == 0
    assert big["nodes"] == 30 and big["bytes_per_node"] <= 5e8
    assert small["wall_hours"] * 3600 == pytest.approx(1e7 * 100 / (1e8 * 10))
    assert big["intersection_steps"] == pytest.approx(1e11)


def test_cost_model_steps_grow_with_the_fitted_exponent():
    """Skew and caps enter through the fitted steps(edges): at the fitted point it is the measured steps,
    and it grows as edges ** exponent."""
    model = CostModel(steps_per_edge=50.0, steps_per_s_per_core=1e8, graph_bytes_per_edge=10.0, replication=1.5,
                      fitted_edges=1e6, steps_exponent=1.2)
    assert model.steps(1e6) == pytest.approx(5e7)
    assert model.steps(1e9) == pytest.approx(5e7 * 1000**1.2)
    assert model.estimate(1e9, ClusterSpec(), nodes=4)["intersection_steps"] == pytest.approx(model.steps(1e9))
