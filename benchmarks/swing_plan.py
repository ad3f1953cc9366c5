"""The two-level plan for sharded Swing on graphs whose CSR does not fit one node, and the cost model
that extrapolates measured runs to a cluster; used by `benchmarks/swing_scale.py`.

Two-level plan (beyond one node's object store): items are cut into work-balanced ranges, one per
node; each node receives only its items' user lists (item -> users) and the full item lists of the
users those items touch (user -> items, users relabelled densely), i.e. the user lists are
*replicated* to every node that needs them. No partial pair sums are shuffled: the alternative of
partitioning users and reducing partial (i, j) sums by item would ship one record per (item pair,
user pair) contribution, i.e. O(merge hits) records, versus O(replication x edges) bytes here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from llm_i2i.i2i.swing import SwingGraph, swing_topk
from llm_i2i.i2i.swing_shards import plan_shards

BYTES_PER_INDEX = 4  # int32 user/item ids in the CSR
BYTES_PER_OFFSET = 8  # int64 indptr entries


@dataclass
class NodeLoad:
    items: int
    users: int  # distinct users whose full lists the node needs
    user_list_bytes: int  # replicated user -> items CSR shipped to the node
    item_list_bytes: int  # the node's item -> users CSR
    work: float

    @property
    def bytes(self) -> int:
        return self.user_list_bytes + self.item_list_bytes


@dataclass
class TwoLevelPlan:
    bounds: np.ndarray
    nodes: list[NodeLoad]
    graph_bytes: int  # both CSR directions once, as one node would hold them
    steps: list[str] = field(
        default_factory=lambda: [
            "1. range-partition items by estimated work (prefix sum, one pass over item degrees)",
            "2. for each node, gather its items' user lists and ship the full item lists of those users",
            "3. every node runs the single-node kernel on its sub-CSR, streaming top-K row groups",
            "4. concatenate the nodes' Parquet parts in item order (no reduce step)",
        ]
    )

    @property
    def bytes_shuffled(self) -> int:
        return int(sum(n.bytes for n in self.nodes))

    @property
    def replication(self) -> float:
        """Bytes shipped over the bytes of the graph held once."""
        return self.bytes_shuffled / self.graph_bytes if self.graph_bytes else 0.0

    @property
    def max_node_bytes(self) -> int:
        return int(max(n.bytes for n in self.nodes))

    def summary(self) -> dict:
        return {
            "nodes": len(self.nodes),
            "graph_bytes": self.graph_bytes,
            "bytes_shuffled": self.bytes_shuffled,
            "replication": self.replication,
            "max_node_bytes": self.max_node_bytes,
            "work_imbalance": float(max(n.work for n in self.nodes) / max(np.mean([n.work for n in self.nodes]), 1e-300)),
            "steps": self.steps,
            "per_node": [asdict(n) for n in self.nodes],
        }


def graph_bytes(graph: SwingGraph) -> int:
    n_users = len(graph.user_indptr) - 1
    return int(
        graph.n_edges * BYTES_PER_INDEX
        + len(graph.item_users) * BYTES_PER_INDEX
        + (n_users + 1 + graph.n_items + 1) * BYTES_PER_OFFSET
        + n_users * 8  # float64 user weights
    )


def node_subgraph(graph: SwingGraph, lo: int, hi: int) -> tuple[SwingGraph, np.ndarray]:
    """What a node holding items lo:hi receives: their item -> users lists and the full item lists
    (and weights) of those users, relabelled densely. Returns (subgraph, global user ids)."""
    seg = graph.item_users[graph.item_indptr[lo] : graph.item_indptr[hi]]
    users = np.unique(seg)
    lens = (graph.user_indptr[users + 1] - graph.user_indptr[users]).astype(np.int64)
    sub_indptr = np.zeros(len(users) + 1, np.int64)
    np.cumsum(lens, out=sub_indptr[1:])
    gather = np.repeat(graph.user_indptr[users] - sub_indptr[:-1], lens) + np.arange(sub_indptr[-1])
    item_indptr = np.zeros(graph.n_items + 1, np.int64)
    item_indptr[lo + 1 : hi + 1] = graph.item_indptr[lo + 1 : hi + 1] - graph.item_indptr[lo]
    item_indptr[hi + 1 :] = item_indptr[hi]
    sub = SwingGraph(
        user_indptr=sub_indptr,
        user_items=graph.user_items[gather],
        item_indptr=item_indptr,
        item_users=np.searchsorted(users, seg).astype(np.int32),
        user_weight=graph.user_weight[users],
        n_items=graph.n_items,
        report={},
    )
    return sub, users


def plan_two_level(graph: SwingGraph, n_nodes: int, work: np.ndarray | None = None) -> TwoLevelPlan:
    """Cost the replicate-user-lists plan exactly (bytes per node) without running the kernel."""
    shards = plan_shards(graph, n_nodes, work)
    user_len = np.diff(graph.user_indptr)
    nodes = []
    for p in range(n_nodes):
        lo, hi = int(shards.bounds[p]), int(shards.bounds[p + 1])
        users = np.unique(graph.item_users[graph.item_indptr[lo] : graph.item_indptr[hi]])
        nodes.append(
            NodeLoad(
                items=hi - lo,
                users=int(len(users)),
                user_list_bytes=int(user_len[users].sum() * BYTES_PER_INDEX + (len(users) + 1) * BYTES_PER_OFFSET + len(users) * 8),
                item_list_bytes=int((graph.item_indptr[hi] - graph.item_indptr[lo]) * BYTES_PER_INDEX + (hi - lo + 1) * BYTES_PER_OFFSET),
                work=float(shards.work[p]),
            )
        )
    return TwoLevelPlan(shards.bounds, nodes, graph_bytes(graph))


def simulate_two_level(graph: SwingGraph, n_nodes: int, k: int, alpha2: float):
    """Run the two-level plan in one process: each node's kernel sees only its shipped sub-CSR.
    Returns (idx [n_items, k], scores, intersection steps, plan); equals `swing_topk(graph, k, alpha2)`."""
    plan = plan_two_level(graph, n_nodes)
    idx = np.full((graph.n_items, k), -1, np.int32)
    sc = np.full((graph.n_items, k), -np.inf)
    steps = 0
    for p in range(n_nodes):
        lo, hi = int(plan.bounds[p]), int(plan.bounds[p + 1])
        if hi == lo:
            continue
        sub, _ = node_subgraph(graph, lo, hi)
        bi, bs, st = swing_topk(sub, k, alpha2, np.arange(lo, hi))
        idx[lo:hi], sc[lo:hi] = bi, bs
        steps += st
    return idx, sc, steps, plan


# --------------------------------------------------------------------------- cost model


@dataclass
class ClusterSpec:
    """A cluster node type; defaults are a common 32-core / 256 GB cloud node on 25 Gbit/s."""

    cores_per_node: int = 32
    memory_per_node_bytes: float = 256e9
    object_store_fraction: float = 0.3  # Ray's default share of node memory for the object store
    network_bytes_per_s: float = 25e9 / 8


@dataclass
class CostModel:
    """Measured rates that the extrapolation rests on (from the benchmark's own runs), for one graph family
    (skew) and one setting of the caps: the kernel's steps grow as edges ** steps_exponent from the fitted
    point (on skewed graphs the pairs of the items at the user cap grow faster than the edges)."""

    steps_per_edge: float  # kernel steps per edge (after caps) at `fitted_edges`, for this skew and these caps
    steps_per_s_per_core: float  # measured kernel throughput
    graph_bytes_per_edge: float  # CSR bytes per edge, both directions
    replication: float  # two-level plan's shipped bytes / graph bytes (measured on the benchmark graphs)
    fixed_seconds: float = 0.0  # start-up + output write, measured
    fitted_edges: float = 1.0
    steps_exponent: float = 1.0  # fitted on two sizes of the family; 1.0 = steps per edge constant

    def steps(self, edges: float) -> float:
        return self.steps_per_edge * self.fitted_edges * (edges / self.fitted_edges) ** self.steps_exponent

    def estimate(self, edges: float, cluster: ClusterSpec, nodes: int | None = None) -> dict:
        """Time and node-hours for `edges` on `nodes` nodes (default: the fewest whose object store
        holds the per-node share of the replicated CSR, at least 1)."""
        total_bytes = edges * self.graph_bytes_per_edge
        store = cluster.memory_per_node_bytes * cluster.object_store_fraction
        single = total_bytes <= store
        if nodes is None:
            nodes = 1 if single else int(np.ceil(total_bytes * self.replication / store))
            # per-node share of the replicated CSR must fit; grow until it does
            while not single and total_bytes * self.replication / nodes > store:
                nodes += 1
        single = single and nodes == 1
        shipped = 0.0 if single else total_bytes * self.replication
        steps = self.steps(edges)
        compute_s = steps / (self.steps_per_s_per_core * cluster.cores_per_node * nodes)
        shuffle_s = 0.0 if single else shipped / nodes / cluster.network_bytes_per_s
        wall_s = compute_s + shuffle_s + self.fixed_seconds
        return {
            "edges": float(edges),
            "plan": "single-node object store" if single else "two-level (replicated user lists)",
            "nodes": int(nodes),
            "cores": int(nodes * cluster.cores_per_node),
            "intersection_steps": steps,
            "graph_bytes": total_bytes,
            "bytes_shuffled": shipped,
            "bytes_per_node": total_bytes if single else shipped / nodes,
            "wall_hours": wall_s / 3600,
            "node_hours": wall_s / 3600 * nodes,
            "core_hours": wall_s / 3600 * nodes * cluster.cores_per_node,
        }
