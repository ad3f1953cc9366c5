"""The distributed path on a local multi-node Ray cluster, without a GPU.

A head that declares 0 GPUs and two worker nodes that declare one GPU each (this machine has none: the actors and
Train workers that get one fall back to CPU). The pipeline goes in through `ray job submit` with token auth on,
exactly as on a real cluster; Ray's state API (`ray list ...`) then shows where each piece ran and what it held,
and the report must carry the same metrics as the single-process `llm-i2i run` on the same config.
The CI variant writes to a URI root (`file://`, through pyarrow as `s3://` would) with a cache per node, so every
worker must fetch its inputs itself; the full variant writes to a shared mount (`shared_storage=true`).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")
pytestmark = [pytest.mark.ray, pytest.mark.timeout(1800)]

TINY_MODEL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "vocab_size": 200}
TINY_SFT = {"epochs": 1, "batch_size": 32, "lr": 5e-3, "warmup_steps": 2, "eval_users": 60, "use_ray": True,
            "num_workers": 2, "use_deepspeed": False, "model": TINY_MODEL}
CI_CONFIG = {
    "data": "default", "synthetic": {"n_users": 150, "n_items": 60, "n_groups": 4}, "backbones": ["swing"],
    "sft_generator": TINY_SFT, "sft_discriminator": TINY_SFT,
    "generate": {"recall_number": 4, "num_actors": 2, "actor_num_cpus": 0.5, "batch_size": 64},
    "discriminate": {"num_actors": 2, "actor_num_cpus": 0.5, "batch_size": 128},
    "score_real": False, "ablations": False, "recall_numbers": [], "confidence_levels": [],
    "fuse": {"threshold": 0.5}, "llm_eval_max_users": 60, "cpus_per_fit": 0.5,
}
# what the run computed, as opposed to when and how long (timings, stage hashes of absolute paths)
METRIC_KEYS = ("dataset", "protocol", "backbones", "generator_alone", "discriminator_auc", "synthetic_pairs",
               "ablations", "figures")
SFT_WORKER, INFERENCE_ACTOR = "RayTrainWorker", "EngineActor"


@pytest.fixture
def auth_env(tmp_path):
    """Token auth on (Ray 2.60): every process of the cluster, the job client and the state CLI carry the token.
    Everything stays on 127.0.0.1: Ray would otherwise rewrite a 127.0.0.1 GCS address to the machine's external
    IP (`resolve_ip_for_localhost`), where this cluster does not listen; the flag below keeps the loopback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), PYTHONPATH=str(REPO),
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               TORCH_EXTENSIONS_DIR=str(REPO / ".cache" / "torch_extensions"))
    return env


@pytest.fixture
def cluster(auth_env, tmp_path):
    """Head: 1 CPU, 0 GPU. Two workers: 2 CPUs, 1 (declared) GPU each. Each node has its own cache directory
    (`caches`: tmp_path/caches/{head,node0,node1})."""
    caches = tmp_path / "caches"
    proc = subprocess.Popen([sys.executable, "-m", "tests.cluster.local_cluster", "1", "2", "2", "1", str(caches)],
                            cwd=REPO,
                            env=auth_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"the local cluster did not start (exit {proc.wait(60)})")
        yield {**json.loads(line), "caches": caches}
    finally:
        proc.stdin.close()  # the helper shuts down exactly the nodes it started
        proc.wait(120)


def ray_cli(env, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, *args], env=env, cwd=REPO, capture_output=True, text=True, check=check, timeout=1200)


def submit(env, dashboard: str, *pipeline_args: str) -> tuple[str, str]:
    """`ray job submit` the whole pipeline; (final status, driver log)."""
    job = f"llm_i2i_{secrets.token_hex(4)}"
    runtime_env = json.dumps({"env_vars": {"PYTHONPATH": str(REPO)}})
    ray_cli(env, "job", "submit", "--address", dashboard, "--submission-id", job, "--runtime-env-json", runtime_env,
            "--", sys.executable, "-m", "ray_jobs.pipeline", *pipeline_args, check=False)
    status = ray_cli(env, "job", "status", "--address", dashboard, job)  # the CLI reports on stderr
    logs = ray_cli(env, "job", "logs", "--address", dashboard, job)
    said = status.stdout + status.stderr
    final = next((s for s in ("SUCCEEDED", "FAILED", "STOPPED", "RUNNING", "PENDING") if s.lower() in said.lower()), said)
    return final, logs.stdout + logs.stderr


def state(env, dashboard: str, kind: str) -> list[dict]:
    out = ray_cli(env, "list", kind, "--address", dashboard, "--detail", "--format", "json", "--limit", "10000")
    return json.loads(out.stdout)


def gpus_held(required: dict[str, float]) -> float:
    """GPUs an actor holds: `GPU`, or inside a placement group (Ray Train) its bundle's `GPU_group_<i>_<pg>`."""
    bundle = [v for k, v in required.items() if re.fullmatch(r"GPU_group_\d+_\w+", k)]
    return bundle[0] if bundle else required.get("GPU", 0.0)


def metrics_of(report_path: Path) -> dict:
    report = json.loads(report_path.read_text())
    return {k: report[k] for k in METRIC_KEYS}


def run_on_cluster_and_alone(tmp_path, env, cluster, config: dict, expected: dict[str, int], uri_root: bool) -> dict:
    """Submit `config` to the cluster, check where its GPU work ran (`expected`: how many SFT workers and
    inference actors at least), run it alone, compare the reports; returns both wall times. `uri_root`: the run
    writes to a `file://` URI (each node fetching into its own cache), else to a shared mount."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    t0 = time.perf_counter()

    # a root on the driver's disk is refused on a 3-node cluster before any stage runs
    status, logs = submit(env, cluster["dashboard"], "--config", str(cfg), "--out", str(tmp_path / "refused"))
    assert status == "FAILED" and "path on the driver and this Ray cluster has 3 nodes" in logs
    assert not (tmp_path / "refused" / "prepare").exists()

    if uri_root:  # no node reads another's disk: the driver's cache (caches/head) is never handed to a worker
        out = (tmp_path / "bucket" / "cluster").as_uri()
        status, logs = submit(env, cluster["dashboard"], "--config", str(cfg), "--out", out)
        report = tmp_path / "bucket" / "cluster" / "report.json"
    else:  # tmp_path is visible at the same path on every node of this one-machine cluster: a shared mount
        status, logs = submit(env, cluster["dashboard"], "--config", str(cfg), "--out", str(tmp_path / "cluster"),
                              "--set", "shared_storage=true")
        report = tmp_path / "cluster" / "report.json"
    assert status == "SUCCEEDED", logs[-4000:]
    cluster_seconds = time.perf_counter() - t0

    nodes = state(env, cluster["dashboard"], "nodes")
    head = {n["node_id"] for n in nodes if n["is_head_node"]}
    gpu_nodes = {n["node_id"] for n in nodes if n["resources_total"].get("GPU", 0) >= 1}
    assert len(head) == 1 and len(gpu_nodes) == 2 and not head & gpu_nodes
    actors = state(env, cluster["dashboard"], "actors")
    # actors that ran (Ray Data may also ask for spare actors it cancels before any node is chosen)
    placed = {kind: [a for a in actors if kind in a["class_name"] and a["node_id"]] for kind in (INFERENCE_ACTOR, SFT_WORKER)}
    print(f"placement: { {k: [(a['node_id'][:8], a['required_resources']) for a in v] for k, v in placed.items()} }")

    # the same config through the single-process command (a local Ray with no GPU declared)
    alone_env = {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
    t1 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "llm_i2i", "run", "--config", str(cfg), "--out", str(tmp_path / "alone")],
                   env=alone_env, cwd=REPO, check=True, timeout=1200)
    alone_seconds = time.perf_counter() - t1
    assert metrics_of(report) == metrics_of(tmp_path / "alone" / "report.json")
    if uri_root:
        # each GPU node fetched what its workers read into its own cache: the dataset and the generator (both
        # SFT runs have a worker on each node; the discriminator's starts from the generator), and some node the
        # discriminator (its inference actors, its AUC task)
        fetched = {node: {p.parent.name for p in (cluster["caches"] / node).glob("remote-*/*/manifest.json")}
                   for node in ("node0", "node1")}
        assert all({"prepare", "sft_generator"} <= f for f in fetched.values()), fetched
        assert any("sft_discriminator" in f for f in fetched.values()), fetched

    assert all(len(placed[k]) >= n for k, n in expected.items()), {k: len(v) for k, v in placed.items()}
    for kind, group in placed.items():
        for a in group:
            assert a["node_id"] in gpu_nodes, f"{kind} {a['actor_id']} ran on {a['node_id']}, not a GPU node"
            assert gpus_held(a["required_resources"]) == 1.0, f"{kind} {a['actor_id']} held {a['required_resources']}"
    assert not [a for g in placed.values() for a in g if a["node_id"] in head]  # the head ran none of them
    assert {a["node_id"] for a in placed[INFERENCE_ACTOR]} == gpu_nodes  # both GPU nodes did inference work
    return {"cluster_seconds": cluster_seconds, "alone_seconds": alone_seconds}


def test_ci_pipeline_on_three_nodes_places_gpu_work_on_gpu_nodes(tmp_path, auth_env, cluster):
    # two SFT runs x 2 workers; generate and discriminate 2 actors each: a stage streams only once its whole pool
    # is up (`actor_start_timeout_s`), so none of them is left pending while another does every batch
    times = run_on_cluster_and_alone(tmp_path, auth_env, cluster, CI_CONFIG, {SFT_WORKER: 4, INFERENCE_ACTOR: 4},
                                     uri_root=True)
    print(f"multi-node CI variant (URI root): {times}")


@pytest.mark.slow
def test_quickstart_on_three_nodes_places_gpu_work_on_gpu_nodes(tmp_path, auth_env, cluster):
    quickstart = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    ray_sft = {"use_ray": True, "num_workers": 2}
    config = {**quickstart, "sft_generator": {**quickstart["sft_generator"], **ray_sft},
              "sft_discriminator": {**quickstart["sft_discriminator"], **ray_sft},
              "wo_longtail_loss": False, "generate": {**quickstart["generate"], "num_actors": 2},
              "discriminate": {**quickstart["discriminate"], "num_actors": 2}}
    times = run_on_cluster_and_alone(tmp_path, auth_env, cluster, config, {SFT_WORKER: 4, INFERENCE_ACTOR: 4},
                                     uri_root=False)
    print(f"multi-node quickstart: {times}")
