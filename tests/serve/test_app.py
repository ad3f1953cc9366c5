"""The Ray Serve app end to end over loopback HTTP and the DeploymentHandle API (one Serve instance per module)."""

import json
import socket
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings, strategies as st

from llm_i2i.index.service import IndexService, RequestError, ServeConfig
from llm_i2i.index.store import write_index
from tests.index.fixtures import random_neighbors

pytestmark = pytest.mark.ray
TOKEN = "t0ken"


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", params=["proxy", "direct"])
def app(request, tmp_path_factory, monkeypatch_module):
    """Every test runs against Serve's HTTP proxy and against direct ingress (the client talks to the replica)."""
    ray = pytest.importorskip("ray")
    from ray import serve

    from serve_apps.i2i_app import deploy, ray_env, replica_urls

    root = tmp_path_factory.mktemp("serve")
    a = write_index(random_neighbors(10, 300, 20), root / "a", {"backbone": "swing"})
    b = write_index(random_neighbors(11, 300, 20, id_seed=10), root / "b", {"backbone": "bm25"})
    bad = write_index(random_neighbors(12, 300, 20, id_seed=10), root / "bad", {"backbone": "bpr"})
    (bad / "neighbors.npy").write_bytes((bad / "neighbors.npy").read_bytes()[:-8])  # truncated copy
    port = _free_port()
    cfg = ServeConfig(index_dir=str(a), max_body_bytes=4096, port=port, ingress=request.param, body_timeout_s=0.5)
    for key, value in {**ray_env(cfg), cfg.admin_token_env: TOKEN}.items():  # the cluster's processes inherit them
        monkeypatch_module.setenv(key, value)
    ray.init(num_cpus=2, include_dashboard=False, address="local", log_to_driver=False)
    handle = deploy(cfg)
    url = replica_urls(cfg.host)[0] if cfg.ingress == "direct" else f"http://127.0.0.1:{port}"
    assert (url != f"http://127.0.0.1:{port}") == (cfg.ingress == "direct")

    def redeploy(index_dir):
        deploy(replace(cfg, index_dir=str(index_dir)))

    yield {"url": url, "handle": handle, "dirs": (a, b, bad), "redeploy": redeploy,
           "local": IndexService(ServeConfig(index_dir=str(a), max_recent=100))}
    serve.shutdown()
    ray.shutdown()


def test_http_matches_in_process_service(app):
    url, local = app["url"], app["local"]
    ids = local.index.neighbors.item_ids
    r = requests.get(f"{url}/similar/{ids[3]}", params={"k": 5})
    assert r.status_code == 200 and r.json() == local.similar(int(ids[3]), 5)
    body = {"recent_items": ids[:30].tolist(), "k": 20, "exclude_seen": True}
    r = requests.post(f"{url}/recommend", json=body)
    assert r.status_code == 200 and r.json() == local.recommend(ids[:30].tolist(), 20, True)
    assert len(r.json()["items"]) == 20 and not set(r.json()["items"]) & set(ids[:30].tolist())
    assert requests.get(f"{url}/healthz").json()["status"] == "ok"
    v = requests.get(f"{url}/version").json()
    assert v["index_version"] == local.index.version and v["backbone"] == "swing"
    assert v["manifest_sha256"] == local.index.manifest_sha256


def test_handle_api(app):
    h, local = app["handle"], app["local"]
    ids = local.index.neighbors.item_ids.tolist()
    assert h.recommend.remote(ids[:5], 7).result() == local.recommend(ids[:5], 7)
    assert h.similar.remote(ids[0], 2).result() == local.similar(ids[0], 2)
    with pytest.raises(RequestError, match="unknown item_id"):
        h.similar.remote(-1, 2).result()


def test_oversized_and_lying_bodies_get_413(app):
    url = app["url"]
    r = requests.post(f"{url}/recommend", data=b"[" * 10_000)
    assert r.status_code == 413 and "4096" in r.json()["error"]

    def chunks():  # no Content-Length: the replica counts while streaming
        for _ in range(20):
            yield b" " * 1000

    r = requests.post(f"{url}/recommend", data=chunks())
    assert r.status_code == 413
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=5) as s:
        s.sendall(b"GET /sim\x00ilar HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(64).split(b" ")[1].startswith(b"4")


def test_slow_body_gets_408_and_frees_its_slot(app):
    """Issue 18: on main a client that sent its body slowly held its request slot for as long as it liked."""
    url = app["url"]
    host, port = url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=15) as s:
        s.sendall(b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"recent_items\": [")
        t0 = time.monotonic()
        try:
            head = s.recv(64)
        except socket.timeout:
            head = b"(no answer in 15 s)"
    assert head.split(b" ")[1:2] == [b"408"], head
    assert time.monotonic() - t0 < 10
    assert requests.get(f"{url}/healthz").status_code == 200


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**66), 2**66) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda ch: st.lists(ch, max_size=4) | st.dictionaries(st.text(max_size=5), ch, max_size=3),
    max_leaves=8,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["similar", "recommend", "raw"]),
    item=st.text(min_size=1, max_size=10).filter(lambda s: "/" not in s and "?" not in s and "#" not in s) | st.integers(-5, 10**20).map(str),
    k=st.none() | st.text(max_size=5) | st.integers(-3, 300).map(str),
    body=st.fixed_dictionaries({"recent_items": st.lists(st.integers(-3, 10**6), max_size=120) | json_values},
                               optional={"k": json_values | st.integers(-3, 300), "exclude_seen": json_values}),
    raw=st.binary(max_size=200),
)
def test_fuzz_http_never_5xx(app, kind, item, k, body, raw):
    url = app["url"]
    if kind == "similar":
        r = requests.get(f"{url}/similar/{requests.utils.quote(item, safe='')}", params={} if k is None else {"k": k})
    elif kind == "recommend":
        r = requests.post(f"{url}/recommend", data=json.dumps(body))
    else:
        r = requests.post(f"{url}/recommend", data=raw)
    assert r.status_code < 500, r.text
    assert r.status_code == 200 or r.json()["error"]


def _wait_version(url, pred, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while True:
        v = requests.get(f"{url}/version").json()
        if pred(v) or time.monotonic() > deadline:
            return v
        time.sleep(0.1)


def test_hot_swap_under_load_has_no_failed_requests(app):
    url, (a, b, bad), redeploy = app["url"], app["dirs"], app["redeploy"]
    ids = app["local"].index.neighbors.item_ids[:50].tolist()
    before = requests.get(f"{url}/version").json()
    statuses, versions, stop = [], set(), threading.Event()

    def load():
        with requests.Session() as s:
            while not stop.is_set():
                try:
                    r = s.post(f"{url}/recommend", json={"recent_items": ids, "k": 10})
                    statuses.append(r.status_code)
                    versions.add(r.json().get("index_version"))
                except requests.RequestException as e:
                    statuses.append(repr(e))

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        redeploy(b)  # user_config change: in-place reconfigure
        v_b = _wait_version(url, lambda v: v["backbone"] == "bm25")
        assert v_b["replica_id"] == before["replica_id"]
        redeploy(bad)  # a truncated index is refused, b keeps serving
        v_bad = _wait_version(url, lambda v: v["last_swap_error"])
        assert v_bad["index_version"] == v_b["index_version"] and "neighbors.npy" in v_bad["last_swap_error"]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        r = requests.post(f"{url}/admin/swap", json={"index_dir": str(bad)}, headers=auth)
        assert r.status_code == 422 and "neighbors.npy" in r.json()["error"]
        assert requests.post(f"{url}/admin/swap", json={"index_dir": str(a)}).status_code == 401
        r = requests.post(f"{url}/admin/swap", json={"index_dir": str(a)}, headers=auth)
        assert r.status_code == 200 and r.json()["current"]["index_version"] == before["index_version"]
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    failed = [s for s in statuses if s != 200]
    assert len(statuses) > 20 and failed == []
    assert {before["index_version"], v_b["index_version"]} <= versions
    assert requests.get(f"{url}/version").json()["replica_id"] == before["replica_id"]  # no replica restart
    redeploy(a)
