"""Shared, generic test fixtures (keep small; area-specific fixtures live beside their tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llm_i2i.data.sequences import Sequences

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def sequences_from_lists(histories: list[list[int]], n_items: int | None = None) -> Sequences:
    """Users' dense item lists (oldest first) -> Sequences; item ids are 100 + dense index so tests
    notice when external and dense ids get mixed up."""
    n_items = n_items if n_items is not None else 1 + max((max(h) for h in histories if h), default=-1)
    indptr = np.zeros(len(histories) + 1, np.int64)
    np.cumsum([len(h) for h in histories], out=indptr[1:])
    items = np.array([i for h in histories for i in h], np.int32)
    return Sequences(
        user_ids=np.arange(len(histories), dtype=np.int64) + 1,
        indptr=indptr,
        items=items,
        item_ids=np.arange(n_items, dtype=np.int64) + 100,
    )


@pytest.fixture
def make_sequences():
    """Builder fixture: `make_sequences([[0, 1], [1, 2]], n_items=4)`."""
    return sequences_from_lists


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture
def shared_data_dir() -> Path:
    """`../shared/data` relative to the repo root; tests that need it skip cleanly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def s3_endpoint():
    """An S3-compatible server (moto) on 127.0.0.1, with one bucket `llm-i2i`; yields a function
    `uri(path) -> "s3://llm-i2i/<path>?endpoint_override=127.0.0.1:<port>&scheme=http"` (pyarrow reads the
    endpoint from the URI, as it would a real store's)."""
    import os
    import socket

    moto_server = pytest.importorskip("moto.server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        import pyarrow.fs as pafs

        fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                               allow_bucket_creation=True)
        fs.create_dir("llm-i2i")
        yield lambda path: f"s3://llm-i2i/{path}?endpoint_override=127.0.0.1:{port}&scheme=http"
    finally:
        server.stop()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(params=["file", "s3"])
def uri_root(request, tmp_path) -> str:
    """A fresh URI storage root: `file://` on tmp_path, and `s3://` on the local S3 server (`s3_endpoint`)."""
    if request.param == "file":
        return (tmp_path / "bucket" / "run").as_uri()
    return request.getfixturevalue("s3_endpoint")(f"run-{tmp_path.name}")
