"""ArtifactStore: content fingerprints, the out-directory lock, the private remote cache, keyed work dirs."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from llm_i2i.pipeline.artifacts import ArtifactStore, OutDirInUse, fingerprint_path

ROOT = Path(__file__).resolve().parents[2]
HOLD_LOCK = """
import sys, time
from pathlib import Path
from llm_i2i.pipeline.artifacts import ArtifactStore
with ArtifactStore(sys.argv[1]).locked():
    Path(sys.argv[2]).write_text("locked")
    time.sleep(600)
"""


def test_fingerprint_sees_an_edit_that_keeps_size_and_mtime(tmp_path):
    f = tmp_path / "data" / "interactions.csv"
    f.parent.mkdir()
    f.write_text("user,item\n1,2\n")
    before, st = fingerprint_path(f.parent), f.stat()
    f.write_text("user,item\n1,3\n")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    assert fingerprint_path(f.parent) != before
    assert fingerprint_path(tmp_path / "nope").startswith("missing:")


def _hold_lock(out: Path, ready: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out), str(ready)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 60
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), f"lock holder exited with {proc.poll()}"
    return proc


def test_second_run_on_the_same_out_stops_at_once(tmp_path, capsys):
    """`llm-i2i run` on an --out that another process is writing exits 2 with a message, before starting Ray; the
    lock dies with its holder, even a SIGKILLed one."""
    from llm_i2i.cli import main

    out = tmp_path / "run"
    holder = _hold_lock(out, tmp_path / "ready")
    try:
        t0 = time.perf_counter()
        assert main(["run", "--out", str(out), "--set", "backbones=[swing]", "--set", "index_backbone=swing"]) == 2
        err = capsys.readouterr().err
        assert "in use by another llm-i2i run" in err and f"pid {holder.pid}" in err and "Traceback" not in err
        with pytest.raises(OutDirInUse, match="choose another --out"):
            with ArtifactStore(str(out)).locked():
                pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    store = ArtifactStore(str(out))
    with store.locked(), store.locked():  # free again, and re-entrant within one process
        pass


def test_killed_runs_leftovers_are_removed_when_the_lock_is_taken(tmp_path):
    out = tmp_path / "run"
    (out / ".generate.abc123.tmp").mkdir(parents=True)
    (out / ".fuse.old").mkdir()
    (out / "prepare").mkdir()
    with ArtifactStore(str(out)).locked():
        assert sorted(p.name for p in out.iterdir()) == [".lock", "prepare"]


def test_remote_cache_is_private_to_the_user(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    store = ArtifactStore((tmp_path / "remote").as_uri())
    cache = Path(store.cache_dir)
    assert cache.parent == tmp_path / "cache" / "llm_i2i" and not str(cache).startswith(tempfile.gettempdir() + "/llm_i2i")
    for d in (cache, cache.parent):
        st = os.lstat(d)
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700
    assert ArtifactStore((tmp_path / "remote").as_uri()).cache_dir == cache  # reused by the next run

    # a directory someone else put in the way (here: a symlink to an open directory) is never used
    other = tmp_path / "elsewhere"
    other.mkdir(mode=0o777)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache2"))
    (tmp_path / "cache2").mkdir()
    (tmp_path / "cache2" / "llm_i2i").symlink_to(other, target_is_directory=True)
    cache = Path(ArtifactStore((tmp_path / "remote").as_uri()).cache_dir)
    assert other not in cache.parents and cache.resolve().parent != other.resolve()
    assert stat.S_IMODE(os.lstat(cache).st_mode) == 0o700 and not list(other.iterdir())


def test_work_dirs_are_keyed_and_superseded_ones_pruned(tmp_path):
    store = ArtifactStore(str(tmp_path / "run"))
    a, b = store.work_dir("sft_generator", "k1"), store.work_dir("sft_generator", "k2")
    keep_other = store.work_dir("sft_generator_alpha1", "k1")
    legacy = a.parent / "sft_generator"
    for d in (a, b, keep_other, legacy, a.parent / ".sft_generator-k1.resume", a.parent / ".sft_generator-k2.resume"):
        d.mkdir(parents=True)
    store.prune_work_dirs("sft_generator", keep=b)
    assert sorted(p.name for p in a.parent.iterdir()) == [".sft_generator-k2.resume", "sft_generator-k2",
                                                          "sft_generator_alpha1-k1"]


def _stage_writing(text: str):
    def run(out: Path) -> dict:
        (out / "dataset").mkdir()
        (out / "dataset" / "x.txt").write_text(text)
        return {}
    return run


def test_a_worker_reads_uri_artifacts_from_its_own_node_cache_never_the_drivers(uri_root, tmp_path, monkeypatch):
    """What the driver hands a Ray worker names the artifact and its content hash, not the driver's cache: the
    worker (here: another LLM_I2I_CACHE, the driver's copy deleted) fetches its own copy (file:// and S3)."""
    from llm_i2i.pipeline.artifacts import NodeLocalPath, materialize, portable

    monkeypatch.setenv("LLM_I2I_CACHE", str(tmp_path / "driver"))
    root = uri_root
    art = ArtifactStore(root).run_stage("prepare", {"v": 1}, {}, _stage_writing("first")).artifact
    assert (tmp_path / "driver") in art.path.parents
    sent = portable((str(art.path / "dataset" / "x.txt"), {"ckpt": art.path / "dataset", "n": 3}, "/elsewhere"))
    assert isinstance(sent[0], NodeLocalPath) and sent[0].rel == "dataset/x.txt" and sent[2] == "/elsewhere"
    assert sent[0].output_hash == art.content_hash

    shutil.rmtree(tmp_path / "driver")
    for node in ("node1", "node2"):
        monkeypatch.setenv("LLM_I2I_CACHE", str(tmp_path / node))
        path, args, elsewhere = materialize(sent)
        assert isinstance(path, str) and Path(path).read_text() == "first" and (tmp_path / node) in Path(path).parents
        assert isinstance(args["ckpt"], Path) and args["ckpt"] == Path(path).parent and args["n"] == 3
        assert elsewhere == "/elsewhere"
    assert not (tmp_path / "driver").exists()

    # the artifact was redone since: a worker holding the old content hash refuses it instead of reading other data
    monkeypatch.setenv("LLM_I2I_CACHE", str(tmp_path / "driver"))
    ArtifactStore(root).run_stage("prepare", {"v": 2}, {}, _stage_writing("second"))
    monkeypatch.setenv("LLM_I2I_CACHE", str(tmp_path / "node3"))
    with pytest.raises(ValueError, match=f"prepare: holds content .* not the {art.content_hash}"):
        materialize(sent)
    monkeypatch.setenv("LLM_I2I_CACHE", str(tmp_path / "node1"))  # a node that fetched it before keeps its copy
    assert Path(materialize(sent)[0]).read_text() == "first"
