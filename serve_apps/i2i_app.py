"""Ray Serve app for the I2I index: a thin wrapper over `llm_i2i.index.service.IndexService`.

HTTP: GET /similar/{item_id}?k=, POST /recommend, GET /healthz, GET /version, POST /admin/swap (token).
Handle API (in-cluster callers): `handle.similar.remote(item_id, k)`, `handle.recommend.remote(recent_items, k,
exclude_seen)`, `handle.version.remote()`; client mistakes raise `RequestError` (a ValueError with `.status`).
Hot swap: change `user_config.index_dir` (`serve deploy` again) or POST /admin/swap. Both end in the deployment's
user_config, which the Serve controller holds: every replica reconfigures to it, and a replica that restarts starts on
it. A new index is loaded and verified before it replaces the old one; a refused one leaves the old one serving.
Backpressure, timeouts and the swap semantics: docs/serving.md.

Ingress: Serve's HTTP proxy (default) or direct ingress (`ServeConfig.ingress = "direct"`: each replica serves HTTP on
its own port, listed by `replica_urls`; the cluster must start with `ray_env(cfg)` in its environment).

No request batching: a /recommend merge (M=100, K=200) costs ~50-80 us in-process, less than the replica's own HTTP
handling of the request, and both are paid per request whether batched or not (benchmarks/results/serve_load*.md),
so batching could only add queueing delay.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from llm_i2i.config import from_dict, to_dict
from llm_i2i.index.service import IndexService, ServeConfig, read_admin_token
from llm_i2i.progress import log, setup_logging

DEPLOYMENT_NAME = "I2IIndex"
APP_NAME = "i2i"


@serve.deployment(name=DEPLOYMENT_NAME, health_check_period_s=2, health_check_timeout_s=10)
class I2IIndexDeployment:
    def __init__(self, config: dict[str, Any]):
        """`config`: ServeConfig fields except index_dir, which arrives through `user_config` so that changing it
        is an in-place reconfigure of the running replicas, not a replacement of them."""
        setup_logging()
        self.cfg = from_dict(ServeConfig, config)
        self.admin_token = read_admin_token(self.cfg)  # here, in the replica: never part of the app's args
        self.service: IndexService | None = None
        self.replica_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.started_unix = time.time()

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """`user_config: {index_dir: ...}` loads (first call) or hot-swaps the index. A replica without an index
        raises (it cannot serve; Serve reports the loader's message). A replica that is serving never raises, which
        would make Serve stop it: whatever goes wrong is logged, reported in /version (last_swap_error), and the
        old index keeps serving."""
        index_dir = (user_config or {}).get("index_dir") or ""
        if self.service is None:
            ctx = serve.get_replica_context()
            rollout = _user_config_rollout(ctx.app_name, ctx.deployment, self.cfg.swap_rollout_timeout_s)
            self.service = IndexService(replace(self.cfg, index_dir=str(index_dir)), self.admin_token, rollout)
            return
        try:
            if not self.service.is_current(index_dir):  # the replica whose /admin/swap published it already serves it
                # hashing a large index must not stall the event loop that keeps serving the old one
                await asyncio.to_thread(self.service.swap, index_dir, False)
        except Exception as e:  # noqa: BLE001 - raising here would stop a replica that serves fine
            log.error(f"user_config swap refused, still serving {self.service.index.version}: {e}")

    def check_health(self) -> None:
        """Serve calls this every health_check_period_s; a failed lookup makes Serve replace the replica."""
        if self.service is not None:
            self.service.probe()

    async def __call__(self, request: Request) -> Response:
        scope = request.scope  # read directly: Starlette's request.url builds and parses a full URL on each request
        method, path = scope["method"], scope["path"]
        body = b""
        if method in ("POST", "PUT", "PATCH"):
            try:
                async with asyncio.timeout(self.cfg.body_timeout_s):  # a slow sender cannot hold a slot for long
                    body = await _read_body(request, self.cfg.max_body_bytes)
            except TimeoutError:
                return _json(408, {"error": f"request body not received within {self.cfg.body_timeout_s} s"})
            if body is None:
                return _json(413, {"error": f"body larger than {self.cfg.max_body_bytes} bytes (or bad Content-Length)"})
        query = request.query_params if scope.get("query_string") else {}
        if path.startswith("/admin/"):  # a swap loads and hashes an index: off the serving loop; only admin reads headers
            status, payload = await asyncio.to_thread(self.service.handle_http, method, path, query, request.headers, body)
        else:
            status, payload = self.service.handle_http(method, path, query, {}, body)
        if path.rstrip("/") == "/version" and status == 200:
            payload = {**payload, "replica_id": self.replica_id, "replica_started_unix": self.started_unix}
        return _json(status, payload)

    # ---- DeploymentHandle API ----------------------------------------------------------------------
    def similar(self, item_id: int, k: int | None = None) -> dict[str, Any]:
        return self.service.similar(item_id, k)

    def recommend(self, recent_items: list[int], k: int | None = None, exclude_seen: bool = True) -> dict[str, Any]:
        return self.service.recommend(recent_items, k, exclude_seen)

    def version(self) -> dict[str, Any]:
        return {**self.service.version(), "replica_id": self.replica_id, "replica_started_unix": self.started_unix}


async def _read_body(request: Request, max_body: int) -> bytes | None:
    """The request body, or None when it is (or claims to be) larger than `max_body`."""
    declared = _content_length(request.scope)
    if declared is not None and (not declared.isdigit() or int(declared) > max_body):
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _user_config_rollout(app: str, deployment: str, timeout_s: float):
    """The `IndexService` rollout of a replica: POST /admin/swap publishes the verified index directory as the
    deployment's `user_config.index_dir` through the Serve controller (the same update as `serve deploy` with a new
    index_dir), so every replica reconfigures to it and a restarted replica starts on it; then waits, up to
    `timeout_s`, until the application runs that config on every replica."""
    def rollout(index_dir: str) -> dict[str, Any]:
        from ray.serve.context import _get_global_client
        from ray.serve.schema import ServeDeploySchema

        client = _get_global_client()
        details = client.get_serve_details()
        apps = details.get("applications", {})
        configs = []
        for name, app_details in apps.items():
            conf = app_details.get("deployed_app_config")
            if conf is None:  # a declarative update would delete an application it does not list
                raise RuntimeError(f"application {name!r} was not deployed from a Serve config (serve deploy / "
                                   "`llm-i2i serve`), so its user_config cannot be updated; redeploy with the new "
                                   "index_dir instead")
            if name == app:
                conf = _with_index_dir(conf, deployment, index_dir)
            configs.append(conf)
        before = apps[app].get("last_deployed_time_s")
        client.deploy_apps(ServeDeploySchema.model_validate(
            {"applications": configs, "target_capacity": details.get("target_capacity")}))
        replicas = _wait_rolled_out(client, app, deployment, before, timeout_s)
        return {"applied_to": f"every replica of {app}/{deployment} (user_config.index_dir; restarts keep it)",
                "replicas": replicas, "rollout": "complete" if replicas is not None else f"pending after {timeout_s} s"}

    return rollout


def _with_index_dir(app_config: dict[str, Any], deployment: str, index_dir: str) -> dict[str, Any]:
    """`app_config` (a Serve application config) with `deployment`'s user_config.index_dir set to `index_dir`."""
    deployments = [dict(d) for d in app_config.get("deployments", [])]
    if not any(d.get("name") == deployment for d in deployments):
        deployments.append({"name": deployment})
    for d in deployments:
        if d.get("name") == deployment:
            d["user_config"] = {**(d.get("user_config") or {}), "index_dir": index_dir}
    return {**app_config, "deployments": deployments}


def _wait_rolled_out(client: Any, app: str, deployment: str, before: float | None, timeout_s: float) -> int | None:
    """Number of running replicas once the update deployed after `before` is RUNNING everywhere, None on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        details = client.get_serve_details()["applications"].get(app, {})
        dep = details.get("deployments", {}).get(deployment, {})
        if (details.get("last_deployed_time_s") != before and str(details.get("status")).endswith("RUNNING")
                and str(dep.get("status")).endswith("HEALTHY")):
            return sum(str(r.get("state")).endswith("RUNNING") for r in dep.get("replicas", []))
        time.sleep(0.2)
    return None


def _content_length(scope: dict[str, Any]) -> bytes | None:
    """The Content-Length header straight from the ASGI scope (names are lower-case there), without building
    Starlette's Headers object for every request."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value
    return None


def _json(status: int, payload: dict[str, Any]) -> Response:
    """orjson: a /recommend answer (200 ids + 200 float scores, NumPy arrays) costs ~8 us to encode instead of ~160 us
    with the json module."""
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json")


def build_app(args: dict[str, Any]) -> serve.Application:
    """App builder (`import_path: serve_apps.i2i_app:build_app`): `args` are `ServeConfig` fields. index_dir, if
    given here, becomes the initial user_config; a `deployments[].user_config` in the Serve config overrides it,
    and that is where a hot-swappable index_dir belongs (args are part of Serve's code version: changing them
    replaces replicas instead of reconfiguring them)."""
    cfg = from_dict(ServeConfig, dict(args))
    deployment = I2IIndexDeployment.options(
        num_replicas=cfg.replicas,
        max_ongoing_requests=cfg.max_ongoing_requests,
        max_queued_requests=cfg.max_queued_requests,
        ray_actor_options={"num_cpus": cfg.replica_cpus},
        user_config={"index_dir": str(Path(cfg.index_dir).resolve()) if cfg.index_dir else ""},
    )
    return deployment.bind(to_dict(replace(cfg, index_dir="", replicas=1)))


DIRECT_INGRESS_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}  # Ray's switch: direct ingress, user code on the replica loop


def ray_env(cfg: ServeConfig) -> dict[str, str]:
    """Environment the Ray cluster must START with for `cfg.ingress` (Serve reads it when its processes start)."""
    return dict(DIRECT_INGRESS_ENV) if cfg.ingress == "direct" else {}


def replica_urls(host: str, app: str = APP_NAME) -> list[str]:
    """HTTP addresses of `app`'s ingress replicas under direct ingress (Serve's target groups); [] under the proxy.
    Replicas bind to the configured HTTP host, so a loopback host is used as is (the target lists the node IP)."""
    from ray.serve.context import _get_global_client

    urls = []
    for group in _get_global_client().get_serve_details().get("target_groups", []):
        if group.get("app_name") != app or str(group.get("protocol")).rsplit(".", 1)[-1] != "HTTP":
            continue
        for t in group.get("targets", []):
            if str(t.get("name", "")).startswith("SERVE_REPLICA::"):
                urls.append(f"http://{host if host in ('127.0.0.1', 'localhost') else t['ip']}:{t['port']}")
    return urls


def serve_config(cfg: ServeConfig) -> dict[str, Any]:
    """The declarative Serve config (the shape of serve_apps/config.yaml) for `cfg`. The allowed index roots are
    written out (default: the directory holding index_dir), so `serve config` shows where swaps may go."""
    cluster_level = ("index_dir", "replicas", "host", "port", "ingress", "request_timeout_s")
    args = {k: v for k, v in to_dict(cfg).items() if k not in cluster_level}
    args["index_roots"] = [str(Path(r).resolve()) for r in cfg.index_roots] or [str(Path(cfg.index_dir).resolve().parent)]
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": cfg.host, "port": cfg.port, "request_timeout_s": cfg.request_timeout_s},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": "serve_apps.i2i_app:build_app",
                "args": args,
                "deployments": [
                    {
                        "name": DEPLOYMENT_NAME,
                        "num_replicas": cfg.replicas,
                        "user_config": {"index_dir": str(Path(cfg.index_dir).resolve())},
                    }
                ],
            }
        ],
    }


def deploy(cfg: ServeConfig, timeout_s: float = 120.0) -> serve.handle.DeploymentHandle:
    """Apply `serve_config(cfg)` the way `serve deploy` / `serve run config.yaml` do, on the Ray cluster this
    process is connected to. Re-applying with another index_dir is a lightweight update: every replica's
    `reconfigure` loads and verifies the new index while the old one keeps serving. Returns once the app runs."""
    from ray.serve._private import api as serve_private  # what the `serve run` CLI itself calls
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(serve_config(cfg))
    client = serve_private.serve_start(http_options=schema.http_options.model_dump(),
                                       proxy_location=schema.proxy_location)
    client.deploy_apps(schema, _blocking=True)
    deadline = time.monotonic() + timeout_s
    while True:  # apply_config is asynchronous: wait until the new target is rolled out, not the old RUNNING state
        app = serve.status().applications.get(APP_NAME)
        dep = app.deployments.get(DEPLOYMENT_NAME) if app else None
        if app and app.status == "RUNNING" and dep and dep.status == "HEALTHY":
            break
        if app and app.status in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise RuntimeError(f"Serve app {APP_NAME} failed to deploy: {app.message or (dep.message if dep else '')}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"Serve app {APP_NAME} not running after {timeout_s}s")
        time.sleep(0.2)
    if cfg.ingress == "direct":
        wait_replica_urls(cfg.host, APP_NAME, cfg.replicas, deadline - time.monotonic())
    return serve.get_app_handle(APP_NAME)


def wait_replica_urls(host: str, app: str, count: int, timeout_s: float) -> list[str]:
    """`replica_urls` once `count` replicas are listed (the controller publishes their ports a moment after the app
    runs); raises, naming the missing environment, when they never appear."""
    deadline = time.monotonic() + timeout_s
    while len(urls := replica_urls(host, app)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"ingress=direct, but Serve lists {len(urls)} of {count} replica HTTP ports for {app!r}: "
                               "start the Ray cluster with "
                               + " ".join(f"{k}={v}" for k, v in DIRECT_INGRESS_ENV.items())
                               + " in its environment (`llm-i2i serve` does this for --address local)")
        time.sleep(0.2)
    return urls
