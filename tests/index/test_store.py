import json
import mmap

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from llm_i2i.index.store import INDEX_FORMAT_VERSION, CorruptIndexError, content_version, load_index, read_neighbors, write_index
from llm_i2i.io import sha256_file
from tests.index.fixtures import BROKEN_INDEXES, edit_manifest as _edit_manifest, random_neighbors


def _write(tmp_path, seed=0, **kw):
    nb = random_neighbors(seed, **kw)
    return nb, write_index(nb, tmp_path / "idx", {"backbone": "swing", "config_hash": "abc"})


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6), n=st.integers(2, 40), k=st.integers(1, 10))
def test_roundtrip_serving_layout_equals_neighbors(tmp_path_factory, seed, n, k):
    nb = random_neighbors(seed, n, k)
    d = write_index(nb, tmp_path_factory.mktemp("i") / "idx", {"backbone": "bm25"})
    ix = load_index(d)
    for name in ("indptr", "neighbors", "item_ids"):
        np.testing.assert_array_equal(getattr(ix.neighbors, name), getattr(nb, name))
        assert _is_mapped(getattr(ix.neighbors, name))
    np.testing.assert_array_equal(ix.neighbors.scores, nb.scores.astype(np.float32))
    assert ix.k == int(np.diff(nb.indptr).max(initial=0)) and ix.n_items == n
    assert ix.manifest["backbone"] == "bm25" and ix.manifest["format_version"] == INDEX_FORMAT_VERSION
    # the table written for the index/baseline commands still reads back to the same lists
    assert read_neighbors(d).to_table().equals(nb.to_table())


def test_manifest_checksums_and_content_version(tmp_path):
    nb, d = _write(tmp_path)
    m = json.loads((d / "manifest.json").read_text())
    assert set(m["files"]) == {"neighbors.parquet", "item_ids.npy", "indptr.npy", "neighbors.npy", "scores.npy"}
    for name, meta in m["files"].items():
        assert meta["sha256"] == sha256_file(d / name) and meta["bytes"] == (d / name).stat().st_size
    again = write_index(nb, tmp_path / "again", {"backbone": "swing"})
    assert json.loads((again / "manifest.json").read_text())["index_version"] == m["index_version"]
    other = write_index(random_neighbors(1), tmp_path / "other", {})
    assert json.loads((other / "manifest.json").read_text())["index_version"] != m["index_version"]
    ix = load_index(d)
    assert ix.describe()["manifest_sha256"] == sha256_file(d / "manifest.json")
    assert ix.describe()["backbone"] == "swing" and ix.describe()["config_hash"] == "abc"


def test_caller_manifest_cannot_override_structure(tmp_path):
    d = write_index(random_neighbors(0), tmp_path / "idx", {"k": 999, "items": -1})
    ix = load_index(d)
    assert ix.k != 999 and ix.n_items == 50


@pytest.mark.parametrize("name", ["item_ids.npy", "indptr.npy", "neighbors.npy", "scores.npy", "neighbors.parquet"])
def test_corrupt_byte_is_refused_naming_file(tmp_path, name):
    _, d = _write(tmp_path)
    raw = bytearray((d / name).read_bytes())
    raw[-1] ^= 0xFF
    (d / name).write_bytes(bytes(raw))
    with pytest.raises(CorruptIndexError, match=name.replace(".", r"\.") + ".*sha256"):
        load_index(d)


@pytest.mark.parametrize("name", ["scores.npy", "neighbors.parquet"])
def test_partial_directory_is_refused(tmp_path, name):
    _, d = _write(tmp_path)
    (d / name).unlink()
    with pytest.raises(CorruptIndexError, match=f"{name}.*missing"):
        load_index(d)


def test_truncated_file_is_refused(tmp_path):
    _, d = _write(tmp_path)
    raw = (d / "neighbors.npy").read_bytes()
    (d / "neighbors.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CorruptIndexError, match=r"neighbors\.npy.*bytes"):
        load_index(d)


def test_bad_or_missing_manifest(tmp_path):
    _, d = _write(tmp_path)
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptIndexError, match="manifest.json.*JSON"):
        load_index(d)
    (d / "manifest.json").unlink()
    with pytest.raises(CorruptIndexError, match="missing manifest"):
        load_index(d)
    with pytest.raises(CorruptIndexError, match="does not exist"):
        load_index(tmp_path / "nope")


def test_old_format_is_refused(tmp_path):
    _, d = _write(tmp_path)
    _edit_manifest(d, lambda m: m.__setitem__("format_version", 1))
    with pytest.raises(CorruptIndexError, match="format_version 1"):
        load_index(d)


def _rewrite_array(d, name, arr):
    """Replace an array AND fix up its checksum: only the invariant checks can catch it then."""
    np.save(d / name, arr, allow_pickle=False)

    def refile(m):
        m["files"][name] = {"sha256": sha256_file(d / name), "bytes": (d / name).stat().st_size}
        m["index_version"] = content_version(m["files"])

    _edit_manifest(d, refile)


@pytest.mark.parametrize(
    "name,mutate,msg",
    [
        ("neighbors.npy", lambda nb: np.where(np.arange(len(nb.neighbors)) == 0, 10**6, nb.neighbors).astype(np.int32), "out of range"),
        ("scores.npy", lambda nb: nb.scores.astype(np.float32)[::-1].copy() * 0 + np.float32(np.nan), "non-finite"),
        ("scores.npy", lambda nb: np.sort(nb.scores.astype(np.float32)), "not sorted"),
        ("item_ids.npy", lambda nb: nb.item_ids[::-1].copy(), "strictly increasing"),
        ("scores.npy", lambda nb: nb.scores.astype(np.float64), "expected 1-D float32"),
        ("indptr.npy", lambda nb: nb.indptr[:-1].copy(), "length"),
    ],
)
def test_invariant_violations_are_refused(tmp_path, name, mutate, msg):
    nb, d = _write(tmp_path)
    _rewrite_array(d, name, mutate(nb))
    with pytest.raises(CorruptIndexError, match=msg):
        load_index(d)


def test_self_neighbour_is_refused(tmp_path):
    nb, d = _write(tmp_path)
    first = int(np.flatnonzero(np.diff(nb.indptr) > 0)[0])
    bad = nb.neighbors.copy()
    bad[nb.indptr[first]] = first
    _rewrite_array(d, "neighbors.npy", bad)
    with pytest.raises(CorruptIndexError, match="lists itself"):
        load_index(d)


def test_object_arrays_are_never_unpickled(tmp_path):
    _, d = _write(tmp_path)
    np.save(d / "item_ids.npy", np.array([object()] * 50, dtype=object), allow_pickle=True)
    with pytest.raises(CorruptIndexError, match="item_ids.npy"):
        load_index(d, verify=False)


@pytest.mark.parametrize("ids", ["sparse", "small"])  # binary search / direct-address table
def test_dense_lookup_matches_python_dict(tmp_path, ids):
    nb = random_neighbors(0)
    if ids == "small":  # 1..n with gaps, the usual numbering
        nb = type(nb)(nb.indptr, nb.neighbors, nb.scores, np.arange(1, 2 * nb.n_items + 1, 2, dtype=np.int64))
    ix = load_index(write_index(nb, tmp_path / "idx", {"backbone": "swing"}))
    assert (ix.id_table is not None) == (ids == "small")
    probe = np.concatenate([nb.item_ids[::3], [-10**9, -1, 0, 10**12, nb.item_ids[0] + 1, nb.item_ids[-1] + 1]])
    dense, known = ix.dense(probe)
    where = {int(x): i for i, x in enumerate(nb.item_ids)}
    for p, dd, kk in zip(probe, dense, known):
        assert kk == (int(p) in where) and dd == where.get(int(p), -1)


def _is_mapped(a: np.ndarray) -> bool:
    """The array is a view of a memory mapping (served without a copy into process memory)."""
    while a is not None:
        if isinstance(a, (np.memmap, mmap.mmap)):
            return True
        a = a.obj if isinstance(a, memoryview) else getattr(a, "base", None)
    return False


@pytest.mark.parametrize("kind", sorted(BROKEN_INDEXES))
def test_broken_manifest_or_file_is_refused_naming_the_field(tmp_path, kind):
    """Issue 18: "k": "eight", k = 2**40 and "files" as a list passed (or crashed) a verified load on main."""
    _, d = _write(tmp_path)
    breaker, msg = BROKEN_INDEXES[kind]
    breaker(d)
    with pytest.raises(CorruptIndexError, match=msg):
        load_index(d)
    if kind != "truncated_file":  # the manifest is validated whether or not the files are hashed
        with pytest.raises(CorruptIndexError, match=msg):
            load_index(d, verify=False)


def test_manifest_field_types_are_checked(tmp_path):
    for field, value, msg in [("items", 1.5, "'items'"), ("rows", True, "'rows'"), ("backbone", 3, "'backbone'"),
                              ("index_version", "0" * 16, "content version"), ("files", {"x": 1}, "'files'"),
                              ("neighbors_sha256", "0" * 64, "neighbors_sha256"), ("format_version", "3", "format_version")]:
        _, d = _write(tmp_path / field)
        _edit_manifest(d, lambda m: m.update({field: value}))
        with pytest.raises(CorruptIndexError, match=msg):
            load_index(d)
    _, d = _write(tmp_path / "meta")
    _edit_manifest(d, lambda m: m["files"]["scores.npy"].update(bytes="12"))
    with pytest.raises(CorruptIndexError, match=r"files\['scores.npy'\]"):
        load_index(d)


def test_symlinked_file_is_refused(tmp_path):
    """A file name cannot lead out of the index directory, not even through a symlink with the expected name."""
    _, d = _write(tmp_path)
    _, other = _write(tmp_path / "o", seed=1)
    (d / "scores.npy").unlink()
    (d / "scores.npy").symlink_to(other / "scores.npy")
    with pytest.raises(CorruptIndexError, match=r"scores\.npy.*regular file"):
        load_index(d)


def test_served_bytes_are_the_verified_bytes(tmp_path, monkeypatch):
    """neighbors.npy renamed over right after it was hashed is not what gets served: the loader hashes and serves one
    mapping of one open file. On main the path was hashed, then opened again by np.load, which served the new file."""
    import hashlib

    nb, d = _write(tmp_path)
    target = sha256_file(d / "neighbors.npy")
    real_sha256, replaced = hashlib.sha256, []

    class SwapAfterHashing:  # hashlib.sha256 that replaces the file the moment its digest has been computed
        def __init__(self, data=b""):
            self.h = real_sha256(data)

        def update(self, data):
            self.h.update(data)

        def hexdigest(self):
            digest = self.h.hexdigest()
            if digest == target and not replaced:
                np.save(d / "evil.npy", np.zeros_like(nb.neighbors), allow_pickle=False)
                (d / "evil.npy").rename(d / "neighbors.npy")
                replaced.append(True)
            return digest

    monkeypatch.setattr(hashlib, "sha256", SwapAfterHashing)
    ix = load_index(d)
    assert replaced  # the file was replaced during the load
    np.testing.assert_array_equal(ix.neighbors.neighbors, nb.neighbors)
