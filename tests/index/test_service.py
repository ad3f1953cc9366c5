import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from llm_i2i.kernels.merge import recommend_batch
from llm_i2i.index.service import IndexService, RequestError, ServeConfig, SwapRefused, _int64_ids, read_admin_token
from llm_i2i.index.store import CorruptIndexError, write_index
from tests.index.fixtures import BROKEN_INDEXES, random_neighbors

TOKEN = "s3cret"


@pytest.fixture(scope="module")
def index_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("svc")
    a = write_index(random_neighbors(0, 60, 8), root / "a", {"backbone": "swing"})
    b = write_index(random_neighbors(1, 60, 8), root / "b", {"backbone": "bm25"})
    bad = write_index(random_neighbors(2, 60, 8), root / "bad", {})
    raw = bytearray((bad / "scores.npy").read_bytes())
    raw[-3] ^= 0x55
    (bad / "scores.npy").write_bytes(bytes(raw))
    return a, b, bad


@pytest.fixture
def svc(index_dirs):
    return IndexService(ServeConfig(index_dir=str(index_dirs[0]), max_recent=5), admin_token=TOKEN)


def _oracle(nb, recent_dense, k, exclude, how="sum", decay=0.8):
    """Brute force: distinct triggers most recent first, scores merged in a dict, ties by dense index."""
    trig = list(dict.fromkeys(reversed(list(recent_dense))))
    acc = {}
    for age, t in enumerate(trig):
        w = decay**age if how == "recency" else 1.0
        for j, s in zip(*nb.row(t)):
            if j in exclude:
                continue
            v = w * float(s)
            acc[j] = max(acc[j], v) if (how == "max" and j in acc) else acc.get(j, 0.0) + v
    ranked = sorted(acc.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return [j for j, _ in ranked], [s for _, s in ranked]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_recommend_matches_brute_force_and_offline_merge(index_dirs, data):
    how = data.draw(st.sampled_from(["sum", "max", "recency"]))
    svc = IndexService(ServeConfig(index_dir=str(index_dirs[0]), max_recent=5, merge=how))
    nb = svc.index.neighbors
    recent = data.draw(st.lists(st.integers(0, nb.n_items - 1), min_size=1, max_size=5))
    k = data.draw(st.integers(1, svc.index.k))
    excl = data.draw(st.booleans())
    got = svc.recommend([int(nb.item_ids[i]) for i in recent], k, excl)
    want_idx, want_sc = _oracle(nb, recent, k, set(recent) if excl else set(), how)
    assert got["items"] == nb.item_ids[want_idx].tolist()
    np.testing.assert_allclose(got["scores"], want_sc, rtol=1e-12)
    idx, sc = recommend_batch(nb, np.array([0, len(recent)]), np.array(recent), num_triggers=5, k=k, how=how,
                              mask_history=excl)
    assert got["items"] == nb.item_ids[idx[0][idx[0] >= 0]].tolist()


def test_similar_is_the_row(svc):
    nb = svc.index.neighbors
    i = int(np.flatnonzero(np.diff(nb.indptr) >= 3)[0])
    got = svc.similar(int(nb.item_ids[i]), 3)
    assert got["items"] == nb.item_ids[nb.row(i)[0][:3]].tolist()
    assert got["scores"] == nb.row(i)[1][:3].tolist()
    assert svc.handle_http("GET", f"/similar/{nb.item_ids[i]}", {"k": "3"}, {}, None) == (200, got)


@pytest.mark.parametrize(
    "method,path,query,body,status,msg",
    [
        ("GET", "/similar/abc", {}, None, 400, "integer"),
        ("GET", "/similar/1.5", {}, None, 400, "integer"),
        ("GET", "/similar/18446744073709551616", {}, None, 400, "int64"),
        ("GET", "/similar/-3", {}, None, 404, "unknown item_id"),
        ("GET", "/similar/{known}", {"k": "0"}, None, 400, "between 1"),
        ("GET", "/similar/{known}", {"k": "9"}, None, 400, "K=8"),
        ("GET", "/similar/{known}", {"k": "x"}, None, 400, "k must be an integer"),
        ("POST", "/similar/{known}", {}, None, 405, "use GET"),
        ("POST", "/recommend", {}, b"", 400, "empty body"),
        ("POST", "/recommend", {}, b"{oops", 400, "not valid JSON"),
        ("POST", "/recommend", {}, b"\xff\xfe", 400, "not valid JSON"),
        ("POST", "/recommend", {}, b"[" * 100000, 400, "not valid JSON"),
        ("POST", "/recommend", {}, b"[1,2]", 400, "JSON object"),
        ("POST", "/recommend", {}, b'{"k": 3}', 400, "missing field recent_items"),
        ("POST", "/recommend", {}, b'{"recent_items": [], "k": 3}', 400, "empty"),
        ("POST", "/recommend", {}, b'{"recent_items": [1,2,3,4,5,6]}', 400, "at most M=5"),
        ("POST", "/recommend", {}, b'{"recent_items": "1,2"}', 400, "JSON list"),
        ("POST", "/recommend", {}, b'{"recent_items": [true]}', 400, "integer"),
        ("POST", "/recommend", {}, b'{"recent_items": [{known}, false]}', 400, "integer"),  # NumPy would take it as an int
        ("POST", "/recommend", {}, b'{"recent_items": [NaN]}', 400, "not valid JSON"),  # NaN and Infinity are not JSON (RFC 8259)
        ("POST", "/recommend", {}, b'{"recent_items": [1e400]}', 400, "not valid JSON"),
        ("POST", "/recommend", {}, b'{"recent_items": [' + b"9" * 5000 + b"]}", 400, "JSON"),
        ("POST", "/recommend", {}, b'{"recent_items": [-1]}', 404, "unknown item id"),
        ("POST", "/recommend", {}, b'{"recent_items": [{known}], "k": -1}', 400, "between 1"),
        ("POST", "/recommend", {}, b'{"recent_items": [{known}], "exclude_seen": "yes"}', 400, "exclude_seen"),
        ("POST", "/recommend", {}, b'{"recent_items": [{known}], "k": "3"}', 400, "k must be an integer"),
        ("POST", "/recommend", {}, b'{"recent_items": ["{known}"]}', 400, "must be an integer"),
        ("POST", "/recommend", {}, b'{"recent_items": [{known}], "extra": 1}', 400, "unknown field"),
        ("GET", "/recommend", {}, None, 405, "use POST"),
        ("GET", "/nope", {}, None, 404, "no route"),
        ("DELETE", "/version", {}, None, 405, "use GET"),
    ],
)
def test_hostile_requests_get_clear_4xx(svc, method, path, query, body, status, msg):
    known = str(int(svc.index.neighbors.item_ids[0]))
    path = path.replace("{known}", known)
    body = body.replace(b"{known}", known.encode()) if body else body
    got_status, payload = svc.handle_http(method, path, query, {}, body)
    assert got_status == status and msg in payload["error"], payload


def test_unknown_items_skip_mode_reports_them(index_dirs):
    svc = IndexService(ServeConfig(index_dir=str(index_dirs[0]), unknown_items="skip"))
    known = int(svc.index.neighbors.item_ids[5])
    got = svc.recommend([known, -77], 3)
    assert got["skipped_unknown"] == [-77] and got["triggers"] == 1
    with pytest.raises(RequestError, match="unknown") as e:
        svc.recommend([-77, -78], 3)
    assert e.value.status == 404


def test_swap_and_refusal_keep_serving(svc, index_dirs):
    a, b, bad = index_dirs
    v_a = svc.version()["index_version"]
    with pytest.raises(SwapRefused, match=r"scores\.npy.*sha256"):
        svc.swap(str(bad))
    assert svc.version()["index_version"] == v_a and "scores.npy" in svc.version()["last_swap_error"]
    assert svc.similar(int(svc.index.neighbors.item_ids[0]), 1)["index_version"] == v_a
    out = svc.swap(str(b))
    assert out["previous"]["index_version"] == v_a and svc.version()["backbone"] == "bm25"
    assert svc.version()["swaps"] == 1 and svc.version()["last_swap_error"] is None


def test_admin_swap_needs_token(index_dirs):
    a, b, bad = index_dirs
    off = IndexService(ServeConfig(index_dir=str(a)))
    assert off.handle_http("POST", "/admin/swap", {}, {}, b"{}")[0] == 403
    svc = IndexService(ServeConfig(index_dir=str(a)), admin_token=TOKEN)
    body = json.dumps({"index_dir": str(b)}).encode()
    assert svc.handle_http("POST", "/admin/swap", {}, {"authorization": "Bearer wrong"}, body)[0] == 401
    assert svc.handle_http("POST", "/admin/swap", {}, {}, body)[0] == 401
    auth = {"authorization": f"Bearer {TOKEN}"}
    st_bad, p_bad = svc.handle_http("POST", "/admin/swap", {}, auth, json.dumps({"index_dir": str(bad)}).encode())
    assert st_bad == 422 and "sha256" in p_bad["error"] and svc.version()["backbone"] == "swing"
    assert svc.handle_http("POST", "/admin/swap", {}, auth, b'{"index_dir": 3}')[0] == 400
    st_ok, p_ok = svc.handle_http("POST", "/admin/swap", {}, auth, body)
    assert st_ok == 200 and p_ok["current"]["backbone"] == "bm25" == svc.version()["backbone"]


@pytest.fixture(scope="module")
def broken_dirs(tmp_path_factory):
    """One index per way of breaking it (tests.index.fixtures.BROKEN_INDEXES), beside a good one."""
    root = tmp_path_factory.mktemp("broken")
    good = write_index(random_neighbors(0, 60, 8), root / "good", {"backbone": "swing"})
    out = {}
    for kind, (breaker, _) in BROKEN_INDEXES.items():
        breaker(write_index(random_neighbors(3, 60, 8), root / kind, {"backbone": "bpr"}))
        out[kind] = root / kind
    return good, out


@pytest.mark.parametrize("kind", sorted(BROKEN_INDEXES))
def test_swap_to_a_broken_index_keeps_serving_and_stays_healthy(broken_dirs, kind):
    """Issue 18: on main "k": "eight" passed the swap (then every lookup raised while /healthz said ok), and "files"
    as a list raised a TypeError that escaped swap."""
    good, broken = broken_dirs
    svc = IndexService(ServeConfig(index_dir=str(good)), admin_token=TOKEN)
    before = svc.version()["index_version"]
    status, payload = svc.handle_http("POST", "/admin/swap", {}, {"authorization": f"Bearer {TOKEN}"},
                                      json.dumps({"index_dir": str(broken[kind])}).encode())
    assert status == 422 and "still serving" in payload["error"], payload
    assert svc.version()["index_version"] == before and svc.version()["last_swap_error"]
    known = int(svc.index.neighbors.item_ids[0])
    assert svc.handle_http("POST", "/recommend", {}, {}, json.dumps({"recent_items": [known]}).encode())[0] == 200
    assert svc.handle_http("GET", "/healthz", {}, {}, None)[0] == 200


def test_any_exception_while_loading_leaves_the_old_index(svc, index_dirs, monkeypatch):
    """Not only the loader's own errors: anything raised during a swap (here a MemoryError) is a refusal."""
    from llm_i2i.index import service

    before = svc.version()["index_version"]
    monkeypatch.setattr(service, "load_index", lambda *a, **k: (_ for _ in ()).throw(MemoryError("no room")))
    with pytest.raises(SwapRefused, match="MemoryError: no room") as e:
        svc.swap(str(index_dirs[1]))
    assert e.value.status == 422 and svc.version()["index_version"] == before


def test_failed_rollout_switches_nothing(index_dirs):
    """A swap the deployment could not take (the controller refused it) is not applied to this replica either."""
    def rollout(path):
        raise RuntimeError("controller unreachable")

    svc = IndexService(ServeConfig(index_dir=str(index_dirs[0])), rollout=rollout)
    before = svc.version()["index_version"]
    with pytest.raises(SwapRefused, match="controller unreachable") as e:
        svc.swap(str(index_dirs[1]))
    assert e.value.status == 503 and svc.version()["index_version"] == before
    published = []
    svc.rollout = lambda path: published.append(path) or {"applied_to": "deployment"}
    out = svc.swap(str(index_dirs[1]))
    assert out["applied_to"] == "deployment" and published == [str(index_dirs[1].resolve())]


def test_index_dirs_are_confined_to_the_roots(index_dirs, tmp_path):
    """Issue 18: on main any directory the replica could read was swappable."""
    a, b, _ = index_dirs
    outside = write_index(random_neighbors(4, 60, 8), tmp_path / "elsewhere", {})
    svc = IndexService(ServeConfig(index_dir=str(a)))  # default root: the directory holding a
    with pytest.raises(SwapRefused, match="outside the allowed index roots"):
        svc.swap(str(outside))
    (a.parent / "link_out").symlink_to(outside)  # a symlink inside the root pointing out of it
    with pytest.raises(SwapRefused, match="outside the allowed index roots"):
        svc.swap(str(a.parent / "link_out"))
    with pytest.raises(SwapRefused, match="outside the allowed index roots"):
        svc.swap(str(a.parent / ".." / tmp_path.name / "elsewhere"))
    svc.swap(str(b))
    wide = IndexService(ServeConfig(index_dir=str(a), index_roots=[str(a.parent), str(tmp_path)]))
    assert wide.swap(str(outside))["current"]["path"] == str(outside.resolve())
    with pytest.raises(CorruptIndexError, match="outside the allowed index roots"):  # the first index too
        IndexService(ServeConfig(index_dir=str(a), index_roots=[str(tmp_path)]))


def test_health_probe_runs_a_real_lookup(svc, monkeypatch):
    """Issue 18: /healthz answered ok without looking anything up, so an index every lookup failed on looked healthy."""
    assert svc.handle_http("GET", "/healthz", {}, {}, None)[0] == 200
    monkeypatch.setattr(svc._state.merger, "recommend_ids", lambda *a, **k: (_ for _ in ()).throw(TypeError("bad k")))
    status, payload = svc.handle_http("GET", "/healthz", {}, {}, None)
    assert status == 503 and "bad k" in payload["error"]
    with pytest.raises(TypeError):
        svc.probe()


def test_admin_token_is_read_where_the_service_runs(tmp_path, monkeypatch):
    """Issue 18: the token was a ServeConfig field, shipped in the Serve application args."""
    assert "admin_token" not in ServeConfig.__dataclass_fields__
    monkeypatch.setenv("MY_ADMIN", "from-env")
    assert read_admin_token(ServeConfig(admin_token_env="MY_ADMIN")) == "from-env"
    (tmp_path / "secret").write_text("from-file\n")
    assert read_admin_token(ServeConfig(admin_token_env="MY_ADMIN", admin_token_file=str(tmp_path / "secret"))) == "from-file"
    monkeypatch.delenv("MY_ADMIN")
    assert read_admin_token(ServeConfig(admin_token_env="MY_ADMIN")) == ""


def json_trees(scalars):
    """Small JSON documents (lists and objects nested a few levels) with `scalars` at the leaves."""
    def containers(ch):
        return st.lists(ch, max_size=4) | st.dictionaries(st.text(max_size=6), ch, max_size=4)

    return st.recursive(scalars, containers, max_leaves=12)


json_values_no_bools = json_trees(
    st.none() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))


@settings(max_examples=400, deadline=None)
@given(st.lists(json_values_no_bools | st.integers(-(2**64), 2**64), min_size=1, max_size=8))
def test_int64_ids_without_bools_matches_the_per_element_check(values):
    """The fast path (NumPy dtype discovery, taken when the JSON has no boolean) accepts and refuses exactly what the
    per-element check does, with the same message."""
    def run(may_hold_bools):
        try:
            return _int64_ids(values, may_hold_bools).tolist()
        except RequestError as e:
            return (e.status, str(e))

    assert run(False) == run(True)


json_values = json_trees(st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    path=st.sampled_from(["/similar/", "/recommend", "/healthz", "/version", "/admin/swap", "/"]) | st.text(max_size=12),
    suffix=st.text(max_size=12),
    query=st.dictionaries(st.sampled_from(["k", "x"]), st.text(max_size=6), max_size=2),
    body=st.one_of(st.none(), st.binary(max_size=64),
                   json_values.map(lambda v: json.dumps(v).encode()),
                   st.fixed_dictionaries({"recent_items": json_values}, optional={"k": json_values, "exclude_seen": json_values})
                   .map(lambda v: json.dumps(v).encode())),
)
def test_fuzz_never_5xx(svc, method, path, suffix, query, body):
    status, payload = svc.handle_http(method, path + suffix, query, {}, body)
    assert 200 <= status < 500 and (status == 200 or payload["error"])
