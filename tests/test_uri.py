"""URI roots through pyarrow (file:// and S3 on a local S3-compatible server): joining paths before a query
string, uploads with a commit marker last, and one atomic fetch per node."""

import threading
from pathlib import Path

import pytest

from llm_i2i.uri import exists, fetch_dir, filesystem, upload_dir, uri_join


def test_uri_join_keeps_the_query_string_last():
    assert uri_join("s3://b/run?endpoint_override=h:9000&scheme=http", "_work", "sft-k") == \
        "s3://b/run/_work/sft-k?endpoint_override=h:9000&scheme=http"
    assert uri_join("file:///tmp/run/", "x") == "file:///tmp/run/x"


def test_upload_then_fetch_once_per_node(uri_root, tmp_path, monkeypatch):
    root = uri_root
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(b"a" * 1000)
    (src / "sub" / "b.txt").write_text("b")
    (src / "DONE").write_text("1")
    fs, base = filesystem(uri_join(root, "dir"))
    order = []
    real_copy = __import__("pyarrow.fs", fromlist=["copy_files"]).copy_files
    monkeypatch.setattr("pyarrow.fs.copy_files", lambda s, d, **kw: order.append(Path(s).name) or real_copy(s, d, **kw))
    upload_dir(src, fs, base, last="DONE")
    assert order[-1] == "DONE" and sorted(order) == ["DONE", "a.bin", "b.txt"]
    assert exists(fs, f"{base}/sub/b.txt")

    local = tmp_path / "node" / "dir"
    results = []
    done = lambda d: (d / "DONE").exists()  # noqa: E731
    threads = [threading.Thread(target=lambda: results.append(fetch_dir(fs, base, local, done))) for _ in range(4)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert results == [local] * 4 and (local / "sub" / "b.txt").read_text() == "b"
    assert not [p for p in local.parent.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(ValueError, match="changed while it was being copied"):  # a copy that fails its check
        fetch_dir(fs, base, tmp_path / "node" / "other", lambda d: False)
    assert not (tmp_path / "node" / "other").exists()
