"""Ray Data actors that keep dying are restarted a bounded number of times, then the run fails (no endless loop)."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from ray_jobs.batch_inference import MAX_ACTOR_RESTARTS, MAX_TASK_RETRIES, EngineSpec, map_with_engine
from tests.llm.test_inference import world  # noqa: F401 - shared session fixture

pytestmark = [pytest.mark.ray, pytest.mark.slow]
SCHEMA = pa.schema([pa.field("user_id", pa.int64()), pa.field("error", pa.string())])


def die(engine, batch: pa.Table, attempts: str) -> pa.Table:
    """Kill the actor process mid-batch, like a segfaulting kernel or an OOM kill would."""
    with open(attempts, "a") as f:
        f.write(f"{os.getpid()}\n")
    os._exit(1)


def test_actor_that_always_dies_fails_the_run_after_bounded_restarts(world, tmp_path):  # noqa: F811
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, address="local", _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        attempts = tmp_path / "attempts.txt"
        with pytest.raises(Exception) as e:
            map_with_engine(pa.table({"user_id": pa.array([1, 2], pa.int64())}), die, {"attempts": str(attempts)},
                            EngineSpec("hf", world[0]), SCHEMA, tmp_path / "out.parquet", num_actors=1,
                            actor_num_cpus=0.5, batch_size=2, max_error_fraction=0.5)
    finally:
        ray.shutdown()
    pids = attempts.read_text().split()
    assert 1 <= len(pids) <= 1 + min(MAX_ACTOR_RESTARTS, MAX_TASK_RETRIES)  # the first try and the bounded retries
    assert len(set(pids)) == len(pids)  # each attempt in a restarted actor process
    assert "died" in str(e.value).lower() or "actor" in str(e.value).lower()
    assert not (tmp_path / "out.parquet").exists()
