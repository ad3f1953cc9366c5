"""The deployables in cluster/: every manifest loads, every path a job or the index service reads is held by a
volume on every pod that may read it (the driver runs on the head), GPU pods tolerate the GPU taint, and the
images and pins exist for the Ray and vLLM the code calls."""

import copy
import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
RAY_VERSION = next(re.search(r"==([\d.]+)", d).group(1) for d in PYPROJECT["project"]["dependencies"] if d.startswith("ray["))


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def pods(cluster_spec: dict) -> dict[str, dict]:
    """Pod specs of a RayCluster spec by group: 'head' and each worker group's name."""
    out = {"head": cluster_spec["headGroupSpec"]["template"]["spec"]}
    out.update({g["groupName"]: g["template"]["spec"] for g in cluster_spec.get("workerGroupSpecs", [])})
    return out


def job_paths(rayjob: dict) -> set[str]:
    """Local absolute paths in a RayJob's entrypoint (`--data /data/x`, `key=/models/y`)."""
    return set(re.findall(r"(?:^|[\s=])(/[^\s]+)", rayjob["spec"]["entrypoint"]))


def service_paths(rayservice: dict) -> set[str]:
    serve = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    return {d["user_config"]["index_dir"] for app in serve["applications"] for d in app["deployments"]}


def unmounted(pod: dict, paths: set[str]) -> list[str]:
    """The paths no volume of this pod holds (a mount at the path or above it, backed by a declared volume)."""
    volumes = {v["name"] for v in pod.get("volumes", [])}
    mounts = [m["mountPath"].rstrip("/") for c in pod["containers"] for m in c.get("volumeMounts", [])
              if m["name"] in volumes]
    return sorted(p for p in paths if not any(p == m or p.startswith(m + "/") for m in mounts))


def out_root(rayjob: dict) -> str:
    return re.search(r"--out\s+(\S+)", rayjob["spec"]["entrypoint"]).group(1)


def out_root_problems(rayjob: dict, cluster_spec: dict) -> list[str]:
    """Why the job's `--out` would be refused on a multi-node cluster (`check_storage_root`): a URI (s3://...) is
    fine; a local root must be one writable volume (the same claim) mounted at the same path on every pod,
    declared shared_storage=true."""
    root = out_root(rayjob)
    if "://" in root:  # a URI: every node fetches and writes through it (check_storage_root probes it)
        return []
    problems = [] if "shared_storage=true" in rayjob["spec"]["entrypoint"] else ["no shared_storage=true"]
    claims = set()
    for name, pod in pods(cluster_spec).items():
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        holders = [m for c in pod["containers"] for m in c.get("volumeMounts", [])
                   if m["name"] in volumes and (root == m["mountPath"].rstrip("/")
                                                or root.startswith(m["mountPath"].rstrip("/") + "/"))]
        if not holders:
            problems.append(f"{name}: {root} not mounted")
            continue
        mount = max(holders, key=lambda m: len(m["mountPath"]))
        if mount.get("readOnly"):
            problems.append(f"{name}: {mount['mountPath']} read-only")
        claims.add((mount["mountPath"], volumes[mount["name"]].get("persistentVolumeClaim", {}).get("claimName")))
    if len(claims) > 1 or None in {c for _, c in claims}:
        problems.append(f"not one shared claim at one path: {sorted(claims, key=str)}")
    return problems


def gpu_pods_without_toleration(cluster_spec: dict) -> list[str]:
    bad = []
    for name, pod in pods(cluster_spec).items():
        wants_gpu = any("nvidia.com/gpu" in {**c.get("resources", {}).get("limits", {}),
                                             **c.get("resources", {}).get("requests", {})} for c in pod["containers"])
        tolerates = any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", []))
        if wants_gpu and not tolerates:
            bad.append(name)
    return bad


def test_every_cluster_file_loads():
    names = sorted(p.name for p in CLUSTER.glob("*.yaml"))
    assert {"kuberay-raycluster.yaml", "kuberay-rayjob.yaml", "kuberay-rayservice.yaml", "ray-cluster.yaml",
            "runtime_env.yaml"} <= set(names)
    for name in names:
        assert isinstance(load(name), dict), name


def test_rayjob_paths_are_mounted_on_every_pod_and_base_model_is_set():
    job = load("kuberay-rayjob.yaml")
    paths = job_paths(job)
    assert {"/data/Beauty", "/models/Llama-2-7b-hf"} <= paths, paths
    assert "sft_generator.model.base_model=/models/" in job["spec"]["entrypoint"]
    group_pods = pods(job["spec"]["rayClusterSpec"])
    assert {"head", "gpu"} == set(group_pods)
    for name, pod in group_pods.items():
        assert unmounted(pod, paths) == [], name
    assert gpu_pods_without_toleration(job["spec"]["rayClusterSpec"]) == []


def test_rayjob_out_root_is_one_shared_writable_volume_declared_shared():
    """`check_storage_root` refuses a multi-node run whose --out is not a mount every node sees, declared
    shared_storage=true: the manifest must pass it (the head runs the driver, the GPU pods the workers)."""
    job = load("kuberay-rayjob.yaml")
    assert out_root(job).startswith("/"), out_root(job)
    assert out_root_problems(job, job["spec"]["rayClusterSpec"]) == []


def test_the_out_root_check_catches_a_missing_mount_a_read_only_one_another_claim_and_no_declaration():
    job = load("kuberay-rayjob.yaml")
    root = out_root(job)
    spec = job["spec"]["rayClusterSpec"]
    worker = spec["workerGroupSpecs"][0]["template"]["spec"]
    mount = next(m for m in worker["containers"][0]["volumeMounts"] if root.startswith(m["mountPath"] + "/"))

    undeclared = copy.deepcopy(job)
    undeclared["spec"]["entrypoint"] = undeclared["spec"]["entrypoint"].replace("shared_storage=true", "")
    assert out_root_problems(undeclared, spec) == ["no shared_storage=true"]
    to_s3 = copy.deepcopy(undeclared)  # the object-store alternative needs neither the volume nor the flag
    to_s3["spec"]["entrypoint"] = to_s3["spec"]["entrypoint"].replace(f"--out {root}", "--out s3://bucket/run")
    assert out_root(to_s3) == "s3://bucket/run" and out_root_problems(to_s3, {"headGroupSpec": {"template": {
        "spec": {"containers": [{}]}}}}) == []
    for edit, expected in [
        (lambda w: w["containers"][0]["volumeMounts"].remove(mount), f"gpu: {root} not mounted"),
        (lambda w: next(m for m in w["containers"][0]["volumeMounts"] if m == mount).update(readOnly=True),
         f"gpu: {mount['mountPath']} read-only"),
        (lambda w: next(v for v in w["volumes"] if v["name"] == mount["name"]).update(
            persistentVolumeClaim={"claimName": "node-local"}), "not one shared claim at one path"),
    ]:
        broken = copy.deepcopy(spec)
        edit(broken["workerGroupSpecs"][0]["template"]["spec"])
        assert any(p.startswith(expected) for p in out_root_problems(job, broken)), expected


def test_raycluster_holds_what_the_rayjob_reads():
    """The long-lived RayCluster takes the same jobs through `ray job submit`."""
    job = load("kuberay-rayjob.yaml")
    paths = job_paths(job)
    spec = load("kuberay-raycluster.yaml")["spec"]
    for name, pod in pods(spec).items():
        assert unmounted(pod, paths) == [], name
    assert out_root_problems(job, spec) == []
    assert gpu_pods_without_toleration(spec) == []


def test_the_checks_catch_a_missing_head_mount_and_a_missing_toleration():
    job = load("kuberay-rayjob.yaml")
    spec = copy.deepcopy(job["spec"]["rayClusterSpec"])
    head = spec["headGroupSpec"]["template"]["spec"]
    head["containers"][0]["volumeMounts"] = [m for m in head["containers"][0]["volumeMounts"] if m["mountPath"] != "/data"]
    assert unmounted(head, job_paths(job)) == ["/data/Beauty"]
    head["volumes"] = [v for v in head["volumes"] if v["name"] != "models"]  # a mount whose volume is gone
    assert unmounted(head, job_paths(job)) == ["/data/Beauty", "/models/Llama-2-7b-hf"]
    del spec["workerGroupSpecs"][0]["template"]["spec"]["tolerations"]
    assert gpu_pods_without_toleration(spec) == ["gpu"]


def test_rayservice_serves_the_index_from_user_config_on_every_pod():
    from ray.serve.schema import ServeDeploySchema

    from llm_i2i.config import from_dict
    from llm_i2i.index.service import ServeConfig
    from serve_apps import i2i_app

    svc = load("kuberay-rayservice.yaml")
    serve = yaml.safe_load(svc["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve)
    app = serve["applications"][0]
    module, attr = app["import_path"].split(":")
    assert module == "serve_apps.i2i_app" and callable(getattr(i2i_app, attr))
    cfg = from_dict(ServeConfig, app["args"])
    cfg.validate()
    assert "admin_token" not in app["args"] and "index_dir" not in app["args"]  # token from env, index from user_config
    paths = service_paths(svc)
    assert paths == {"/indexes/beauty/current"}
    for name, pod in pods(svc["spec"]["rayClusterConfig"]).items():
        assert unmounted(pod, paths) == [], name


@pytest.mark.parametrize("name", ["kuberay-raycluster.yaml", "kuberay-rayjob.yaml", "kuberay-rayservice.yaml"])
def test_kuberay_ray_version_matches_the_pin(name):
    doc = load(name)
    spec = doc["spec"].get("rayClusterSpec") or doc["spec"].get("rayClusterConfig") or doc["spec"]
    assert spec["rayVersion"] == RAY_VERSION


def test_images_exist_for_this_ray():
    """ray-ml images stopped at Ray 2.49: GPU images build on rayproject/ray of the pinned Ray."""
    base = f"rayproject/ray:{RAY_VERSION}-py311-gpu"
    docker_from = re.search(r"^FROM\s+(\S+)", (CLUSTER / "Dockerfile.gpu").read_text(), re.M).group(1)
    assert docker_from == base and load("ray-cluster.yaml")["docker"]["image"] == base
    assert not re.search(r"image:\s*\S*ray-ml", "".join(p.read_text() for p in CLUSTER.glob("*.yaml")))


def test_pins_cover_the_apis_the_code_calls():
    gpu = PYPROJECT["project"]["optional-dependencies"]["gpu"]
    vllm = next(d for d in gpu if d.startswith("vllm"))
    assert vllm == "vllm==0.32.0"  # SamplingParams(logprob_token_ids=...), LLM(logprobs_mode=...)
    assert "logprob_token_ids" in (REPO / "llm_i2i" / "llm" / "vllm_engine.py").read_text()
    transformers = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("transformers"))
    floor = tuple(int(x) for x in re.search(r">=([\d.]+)", transformers).group(1).split("."))
    assert floor >= (4, 56)  # from_pretrained(dtype=...)
    assert not any(d.startswith("flash-attn") for d in gpu)  # cannot build in pip's build isolation
    dockerfile = (CLUSTER / "Dockerfile.gpu").read_text()
    fa = dockerfile.index("flash-attn")
    assert dockerfile.index("requirements/gpu.txt") < fa and "--no-build-isolation" in dockerfile[fa - 200:fa]
