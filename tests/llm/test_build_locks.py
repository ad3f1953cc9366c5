"""A killed DeepSpeed op build leaves `<op>/lock`; torch would wait on it forever, so stale ones are removed."""

import os
import time

from ray_jobs.train_llm import clear_stale_build_locks


def _op_dir(root, name, age_s):
    d = root / name
    d.mkdir()
    for f in ("lock", "build.ninja"):
        (d / f).write_text("")
        os.utime(d / f, (time.time() - age_s, time.time() - age_s))
    return d


def test_only_idle_locks_are_removed(tmp_path):
    stale = _op_dir(tmp_path, "deepspeed_shm_comm", age_s=3600)
    live = _op_dir(tmp_path, "cpu_adam", age_s=3600)
    (live / "shm.o").write_text("")  # a compile wrote an object file just now: the build is alive
    assert clear_stale_build_locks(tmp_path, idle_seconds=600) == [stale / "lock"]
    assert not (stale / "lock").exists() and (live / "lock").exists()
    assert (stale / "build.ninja").exists()  # only the lock goes


def test_missing_extension_dir_is_fine(tmp_path):
    assert clear_stale_build_locks(tmp_path / "absent") == []
