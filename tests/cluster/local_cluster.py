"""A local multi-node Ray cluster in its own process, for tests: a head that declares 0 GPUs and worker nodes that
declare GPUs this machine does not have (Ray schedules on declared resources; torch then finds no CUDA device).

    python -m tests.cluster.local_cluster HEAD_CPUS WORKERS WORKER_CPUS WORKER_GPUS [CACHES]

With CACHES, every node gets its own cache directory (LLM_I2I_CACHE=CACHES/head, CACHES/node<i>), as nodes that
share no disk would: a worker that read the driver's cached copy of a URI root's artifact instead of fetching its
own would leave its node's cache empty. Prints one JSON line {"gcs": ..., "dashboard": ...} once every node is up,
then holds the cluster until its stdin closes, and shuts down exactly the processes it started. Its own process, so
that the token-auth environment (RAY_AUTH_MODE / RAY_AUTH_TOKEN) is in place before Ray is imported, and no other
test's Ray is touched.
"""

from __future__ import annotations

import json
import os
import socket
import sys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(head_cpus: float, workers: int, worker_cpus: float, worker_gpus: float, caches: str | None = None) -> None:
    from ray.cluster_utils import Cluster

    def node_cache(name: str) -> None:  # a node's processes inherit the environment its raylet starts with
        if caches:
            os.environ["LLM_I2I_CACHE"] = os.path.join(caches, name)

    dashboard = free_port()
    node_cache("head")
    local = dict(node_ip_address="127.0.0.1", object_store_memory=120 * 1024 * 1024)
    cluster = Cluster(initialize_head=True, head_node_args=dict(
        **local, num_cpus=head_cpus, num_gpus=0, gcs_server_port=free_port(), include_dashboard=True,
        dashboard_host="127.0.0.1", dashboard_port=dashboard, dashboard_agent_listen_port=free_port(),
        ray_client_server_port=free_port()))
    try:
        for i in range(workers):
            node_cache(f"node{i}")
            cluster.add_node(**local, num_cpus=worker_cpus, num_gpus=worker_gpus)
        cluster.wait_for_nodes()
        print(json.dumps({"gcs": cluster.address, "dashboard": f"http://127.0.0.1:{dashboard}"}), flush=True)
        sys.stdin.read()  # held until the test closes our stdin
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main(float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), *sys.argv[5:6])
