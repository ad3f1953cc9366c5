"""POST /admin/swap on a deployment with two replicas (direct ingress, so each replica is addressed on its own):
the swap reaches every replica, survives a replica restart, and broken indexes leave every replica serving."""

import socket
import time
from dataclasses import replace

import pytest
import requests

from llm_i2i.index.service import ServeConfig
from llm_i2i.index.store import write_index
from tests.index.fixtures import BROKEN_INDEXES, random_neighbors

pytestmark = pytest.mark.ray
TOKEN = "sw4p"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def two_replicas(tmp_path_factory):
    ray = pytest.importorskip("ray")
    from ray import serve

    from serve_apps.i2i_app import deploy, ray_env

    root = tmp_path_factory.mktemp("swap")
    a = write_index(random_neighbors(20, 200, 10), root / "a", {"backbone": "swing"})
    b = write_index(random_neighbors(21, 200, 10, id_seed=20), root / "b", {"backbone": "bm25"})
    broken = {}
    for kind, (breaker, _) in BROKEN_INDEXES.items():
        breaker(write_index(random_neighbors(22, 200, 10, id_seed=20), root / kind, {"backbone": "bpr"}))
        broken[kind] = root / kind
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = ServeConfig(index_dir=str(a), port=port, ingress="direct", replicas=2, replica_cpus=0.25)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**ray_env(cfg), cfg.admin_token_env: TOKEN}.items():
            mp.setenv(key, value)
        ray.init(num_cpus=2, include_dashboard=False, address="local", log_to_driver=False)
        try:
            deploy(cfg)
            yield {"a": a, "b": b, "broken": broken, "host": cfg.host, "cfg": cfg}
        finally:
            serve.shutdown()
            ray.shutdown()


def _versions(host, count=2, timeout_s=60.0):
    """{replica_id: /version} of every replica, once `count` replicas answer."""
    from serve_apps.i2i_app import replica_urls

    deadline = time.monotonic() + timeout_s
    while True:
        out = {}
        for url in replica_urls(host):
            try:
                v = requests.get(f"{url}/version", timeout=5).json()
                out[v["replica_id"]] = {**v, "url": url}
            except requests.RequestException:
                pass
        if len(out) >= count or time.monotonic() > deadline:
            return out
        time.sleep(0.3)


def test_admin_swap_reaches_every_replica_and_survives_a_restart(two_replicas):
    """Issue 18: on main the swap reached the one replica that took the request; a restarted replica reverted."""
    import ray
    from ray.serve.context import _get_global_client

    host, a, b = two_replicas["host"], two_replicas["a"], two_replicas["b"]
    first = _versions(host)
    assert len(first) == 2 and {v["backbone"] for v in first.values()} == {"swing"}
    url = next(iter(first.values()))["url"]
    r = requests.post(f"{url}/admin/swap", json={"index_dir": str(b)}, headers=AUTH, timeout=90)
    assert r.status_code == 200, r.text
    assert r.json()["rollout"] == "complete" and r.json()["replicas"] == 2
    after = _versions(host)
    assert set(after) == set(first)  # reconfigured in place, not replaced
    assert {v["index_version"] for v in after.values()} == {r.json()["current"]["index_version"]}

    details = _get_global_client().get_serve_details()["applications"]["i2i"]["deployments"]["I2IIndex"]
    victim = details["replicas"][0]["actor_name"]
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    deadline = time.monotonic() + 90
    while True:  # Serve replaces the killed replica
        now = _versions(host)
        if len(now) == 2 and set(now) != set(first) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    fresh = set(now) - set(first)
    assert fresh, "the killed replica was not replaced"
    assert {now[i]["backbone"] for i in fresh} == {"bm25"}  # the restarted replica starts on the swapped index
    back = requests.post(f"{now[min(fresh)]['url']}/admin/swap", json={"index_dir": str(a)}, headers=AUTH, timeout=90)
    assert back.status_code == 200 and back.json()["replicas"] == 2


@pytest.mark.parametrize("kind", ["files_as_list", *[pytest.param(k, marks=pytest.mark.slow)
                                                     for k in ("k_as_text", "k_huge", "truncated_file")]])
def test_broken_swaps_leave_every_replica_serving(two_replicas, kind):
    """Issue 18: "files" as a list escaped reconfigure on main, and Serve stopped the replica."""
    from serve_apps.i2i_app import deploy

    host = two_replicas["host"]
    before = _versions(host)
    url = next(iter(before.values()))["url"]
    r = requests.post(f"{url}/admin/swap", json={"index_dir": str(two_replicas["broken"][kind])}, headers=AUTH, timeout=30)
    assert r.status_code == 422 and "still serving" in r.json()["error"]
    cfg = two_replicas["cfg"]
    deploy(replace(cfg, index_dir=str(two_replicas["broken"][kind])))  # through user_config: every replica refuses it
    after = _versions(host)
    deploy(replace(cfg, index_dir=next(iter(before.values()))["path"]))  # back to what they serve
    assert set(after) == set(before)
    assert {v["index_version"] for v in after.values()} == {v["index_version"] for v in before.values()}
    assert all(v["last_swap_error"] for v in after.values())
    ids = random_neighbors(20, 200, 10).item_ids[:5].tolist()
    for v in after.values():
        assert requests.post(f"{v['url']}/recommend", json={"recent_items": ids}, timeout=5).status_code == 200
        assert requests.get(f"{v['url']}/healthz", timeout=5).status_code == 200
