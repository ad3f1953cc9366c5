"""The one way every entry point reaches Ray, and the cluster facts the pipeline derives from it.

`init_ray` joins `--address` / `RAY_ADDRESS` (a running cluster, e.g. under `ray job submit`) or starts a local
Ray bound to 127.0.0.1. Resources come from what the cluster declares (`ray.cluster_resources()`), never from
the driver's own CUDA: under `ray job submit` the driver sits on a head that often has no GPU at all.
`check_storage_root` refuses, at the start of a run, a storage root that the other nodes cannot read.
Not part of the algorithm core: `llm_i2i/pipeline`, the commands and `ray_jobs` import it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Callable

from llm_i2i.progress import log
from llm_i2i.uri import filesystem, is_uri, uri_join

LOCAL = "local"


def resolve_address(address: str | None = None) -> str:
    """`address`, else RAY_ADDRESS, else 'local' (start a Ray on this machine)."""
    return address or os.environ.get("RAY_ADDRESS") or LOCAL


def init_ray(address: str | None = None, *, num_cpus: int | None = None,
             runtime_env: dict[str, Any] | None = None) -> None:
    """Connect this process to Ray once: the cluster at `address` / RAY_ADDRESS, or a new local one.

    A local Ray listens on 127.0.0.1 only and has `num_cpus` CPUs (default: this machine's); a running cluster
    keeps its own resources (token auth, if on, is picked up from RAY_AUTH_TOKEN / ~/.ray/auth_token by Ray).
    Workers' logs reach this process (Ray's default): SFT epochs and inference progress run in Ray workers, and
    under `ray job submit` the driver's output is the job log a user follows.
    """
    import ray

    if ray.is_initialized():
        return
    address = resolve_address(address)
    if address == LOCAL:
        ray.init(address=LOCAL, num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 _node_ip_address="127.0.0.1", runtime_env=runtime_env)
    else:
        ray.init(address=address, runtime_env=runtime_env)
    log.info(f"Ray at {address}: {len(alive_nodes())} node(s), {ray.cluster_resources()}")


def alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def gpus_per_actor(requested: float | None) -> float:
    """GPUs one inference actor / Train worker asks for: the configured number, else 1 when the cluster
    declares any GPU and 0 otherwise."""
    if requested is not None:
        if requested < 0:
            raise ValueError(f"num_gpus must be >= 0, got {requested}")
        return float(requested)
    import ray

    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def _sees(location: str, token: str) -> bool:
    """Whether this process reads `token` at `location` (a path, or a URI through pyarrow)."""
    if not is_uri(location):
        p = Path(location)
        return p.exists() and p.read_text() == token
    try:
        fs, path = filesystem(location)
        with fs.open_input_stream(path) as f:
            return f.read().decode() == token
    except OSError:  # unreachable endpoint, no credentials on that node, not found
        return False


def nodes_not_seeing(root: str) -> list[str]:
    """Ids of the alive nodes on which a marker the driver just wrote under `root` (a path or a URI) is not
    readable."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = secrets.token_hex(8)
    name = f".shared_storage_probe_{token}"
    if is_uri(root):
        fs, base = filesystem(root)
        fs.create_dir(base, recursive=True)
        marker, where = f"{base}/{name}", uri_join(root, name)
        with fs.open_output_stream(marker) as f:
            f.write(token.encode())
        remove = lambda: fs.delete_file(marker)  # noqa: E731
    else:
        Path(root).mkdir(parents=True, exist_ok=True)
        path = Path(root).resolve() / name
        path.write_text(token)
        where, remove = str(path), path.unlink
    try:
        check = ray.remote(num_cpus=0)(_sees)
        nodes = [n["NodeID"] for n in alive_nodes()]
        refs = [check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(where, token)
                for n in nodes]
        return [n for n, ok in zip(nodes, ray.get(refs, timeout=300)) if not ok]
    finally:
        remove()


def check_storage_root(root: str, shared: bool, n_nodes: int | None = None,
                       unseen_by: Callable[[str], list[str]] = nodes_not_seeing) -> None:
    """Stop a multi-node run whose storage root lives on the driver's disk, before any stage runs.

    Every worker reads and writes under the root (datasets, tokenizers, checkpoints, Train storage, stage
    artifacts), so on more than one node it must be either a URI (s3://...: each node fetches what it reads into
    its own cache and writes through the URI, see `pipeline/artifacts.py`) or a mount that every node sees at
    the same path, declared with `shared_storage: true`. Either way every node must read a marker the driver
    writes there (`unseen_by`): a node without the mount, or without the endpoint or credentials, stops the run.
    """
    n_nodes = len(alive_nodes()) if n_nodes is None else n_nodes
    if n_nodes <= 1:
        return
    if is_uri(root):
        blind = unseen_by(str(root))
        if blind:
            raise ValueError(f"storage root {root}: {len(blind)} of {n_nodes} node(s) cannot read an object the "
                             f"driver wrote there ({', '.join(n[:12] for n in blind)}): give every node the "
                             "endpoint and credentials of that store")
        return
    if not shared:
        raise ValueError(f"storage root {root} is a path on the driver and this Ray cluster has {n_nodes} nodes: "
                         "workers elsewhere could not read the datasets, tokenizers and checkpoints under it. Put "
                         "--out on a mount every node sees at the same path and set shared_storage=true")
    blind = unseen_by(str(root))
    if blind:
        raise ValueError(f"storage root {root} is declared shared, but {len(blind)} of {n_nodes} node(s) cannot read "
                         f"a file the driver wrote there ({', '.join(n[:12] for n in blind)}): mount it at the same "
                         "path on every node")
