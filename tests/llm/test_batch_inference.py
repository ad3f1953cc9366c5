"""Ray Data pipelines: actors give exactly the in-process reference output; CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llm_i2i.llm.discriminate import DiscriminateConfig, real_interaction_pairs, run_discriminate
from llm_i2i.llm.generate import GenerateConfig, run_generate
from ray_jobs.batch_inference import map_with_engine
from tests.llm.test_inference import world  # noqa: F401 - shared session fixture

FLOAT_COLUMNS = ("score", "confidence")


def assert_same_output(a: pa.Table, b: pa.Table) -> None:
    """Same rows in the same order; floats equal up to batch-composition rounding (padding width, threads)."""
    assert a.schema == b.schema and a.num_rows == b.num_rows
    for name in a.column_names:
        if name in FLOAT_COLUMNS:
            x, y = a.column(name).to_pylist(), b.column(name).to_pylist()
            assert [v is None for v in x] == [v is None for v in y]
            np.testing.assert_allclose([v for v in x if v is not None], [v for v in y if v is not None], atol=1e-5)
        else:
            assert a.column(name).equals(b.column(name)), name

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray that DECLARES two GPUs this machine does not have: every actor gets one (the default when the
    cluster has GPUs), finds no usable CUDA device and falls back to CPU, so the outputs below are CPU outputs."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, address="local", _node_ip_address="127.0.0.1",
             log_to_driver=False)
    yield ray
    ray.shutdown()


def test_generate_on_ray_actors_equals_in_process(ray_cluster, world, tmp_path):  # noqa: F811
    ckpt, data = world
    ref = run_generate(GenerateConfig(recall_number=4, num_actors=0, batch_size=4), ckpt, data, tmp_path / "ref.parquet",
                       map_with_engine)
    cfg = GenerateConfig(recall_number=4, num_actors=2, actor_num_cpus=0.5, torch_threads=1, batch_size=4)
    got = run_generate(cfg, ckpt, data, tmp_path / "ray.parquet", map_with_engine)
    a, b = pq.read_table(tmp_path / "ref.parquet"), pq.read_table(tmp_path / "ray.parquet")
    assert_same_output(a, b)  # same rows in the same order (preserve_order)
    assert got["error_rows"] == ref["error_rows"] > 0 and got["users_in"] == ref["users_in"]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temp file


def test_discriminate_real_pairs_on_ray_equals_in_process(ray_cluster, world, tmp_path):  # noqa: F811
    from llm_i2i.data import load_dataset

    ckpt, data = world
    pairs = real_interaction_pairs(load_dataset(data).sequences())
    pairs = pairs.append_column("note", pa.array([f"r{i}" for i in range(pairs.num_rows)]))
    pq.write_table(pairs, tmp_path / "pairs.parquet")
    ref = run_discriminate(DiscriminateConfig(num_actors=0, batch_size=16), ckpt, data, tmp_path / "pairs.parquet",
                           tmp_path / "ref.parquet", map_with_engine)
    got = run_discriminate(DiscriminateConfig(num_actors=2, actor_num_cpus=0.5, batch_size=16, torch_threads=1), ckpt,
                           data, tmp_path / "pairs.parquet", tmp_path / "ray.parquet", map_with_engine)
    a, b = pq.read_table(tmp_path / "ref.parquet"), pq.read_table(tmp_path / "ray.parquet")
    assert_same_output(a, b)
    assert a.column_names == ["user_id", "item_id", "position", "note", "confidence", "error"]
    # position 0 of every user has no earlier item: exactly those rows are 'empty history' errors
    first = np.asarray(a.column("position")) == 0
    err = np.array([e is not None for e in a.column("error").to_pylist()])
    np.testing.assert_array_equal(err, first)
    assert got["error_rows"] == ref["error_rows"] == int(first.sum())


def test_cli_generate_then_discriminate(ray_cluster, world, tmp_path, capsys):  # noqa: F811
    from llm_i2i.cli import main

    ckpt, data = world
    cand = tmp_path / "candidates.parquet"
    assert main(["generate", "--checkpoint", ckpt, "--data", data, "--out", str(cand), "--set", "recall_number=2",
                 "--set", "actor_num_cpus=0.5", "--set", "max_users=6"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["users_in"] == 6 and stats["rows_out"] == pq.read_metadata(cand).num_rows
    out = tmp_path / "scored.parquet"
    assert main(["discriminate", "--checkpoint", ckpt, "--data", data, "--pairs", str(cand), "--out", str(out),
                 "--set", "actor_num_cpus=0.5"]) == 0
    assert pq.read_metadata(out).num_rows == stats["rows_out"]
    assert main(["generate", "--checkpoint", ckpt, "--data", data, "--out", str(cand), "--set", "engine=tgi"]) == 2



PROBE_SCHEMA = pa.schema([pa.field("gpu_ids", pa.list_(pa.int64())), pa.field("cuda_visible_devices", pa.string()),
                          pa.field("engine_device", pa.string()), pa.field("error", pa.string())])


def probe_batch(engine, batch: pa.Table) -> pa.Table:
    """What the actor that holds `engine` was given (Ray's GPU ids, CUDA_VISIBLE_DEVICES) and where its model runs."""
    import os

    import ray

    row = [[int(g) for g in ray.get_gpu_ids()], os.environ.get("CUDA_VISIBLE_DEVICES"), str(engine.model.device), None]
    return pa.table([pa.array([v] * batch.num_rows, f.type) for v, f in zip(row, PROBE_SCHEMA)], schema=PROBE_SCHEMA)


def probe(ckpt, tmp_path, num_gpus):
    from llm_i2i.llm.inference import EngineSpec

    out = tmp_path / "probe.parquet"
    map_with_engine(pa.table({"x": [1, 2, 3]}), probe_batch, {}, EngineSpec("hf", ckpt), PROBE_SCHEMA, out,
                    num_actors=1, actor_num_cpus=0.5, num_gpus=num_gpus, batch_size=3)
    return pq.read_table(out).to_pylist()[0]


def test_actors_hold_the_gpus_the_cluster_declares_and_fall_back_to_cpu(ray_cluster, world, tmp_path):  # noqa: F811
    from llm_i2i.raycluster import gpus_per_actor

    assert gpus_per_actor(None) == 1.0 and gpus_per_actor(0.5) == 0.5  # default: 1 when the cluster has GPUs
    got = probe(world[0], tmp_path, None)
    # the actor holds one GPU (before: none, since map_batches asked for none) and, torch
    # finding no CUDA device behind it, its engine runs on the CPU
    assert len(got["gpu_ids"]) == 1 and got["cuda_visible_devices"] == str(got["gpu_ids"][0])
    assert got["engine_device"] == "cpu"


def test_zero_gpus_asked_means_none_held(ray_cluster, world, tmp_path):  # noqa: F811
    got = probe(world[0], tmp_path, 0)
    assert got["gpu_ids"] == [] and not got["cuda_visible_devices"] and got["engine_device"] == "cpu"
