"""Ray Serve app for the I2I index: a thin wrapper over `llm_i2i.index.service.IndexService`.

HTTP: GET /similar/{item_id}?k=, POST /recommend, GET /healthz, GET /version, POST /admin/swap (token).
Handle API (in-cluster callers): `handle.similar.remote(item_id, k)`, `handle.recommend.remote(recent_items, k,
exclude_seen)`, `handle.version.remote()`; client mistakes raise `RequestError` (a ValueError with `.status`).
Hot swap: change `user_config.index_dir` (`serve deploy` / `serve.run` again) or POST /admin/swap; a new index is
loaded and verified before it replaces the old one, and a refused one leaves the old one serving.

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
from llm_i2i.index.service import IndexService, ServeConfig
from llm_i2i.index.store import CorruptIndexError
from llm_i2i.progress import log, setup_logging

DEPLOYMENT_NAME = "I2IIndex"
APP_NAME = "i2i"


@serve.deployment(name=DEPLOYMENT_NAME, max_ongoing_requests=32, health_check_period_s=2)
class I2IIndexDeployment:
    def __init__(self, config: dict[str, Any]):
        """`config`: ServeConfig fields except index_dir, which arrives through `user_config` so that changing it
        is an in-place reconfigure of the running replicas, not a replacement of them."""
        setup_logging()
        self.cfg = from_dict(ServeConfig, config)
        self.cfg.admin_token = self.cfg.admin_token or os.environ.get("LLM_I2I_ADMIN_TOKEN", "")
        self.service: IndexService | None = None
        self.replica_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.started_unix = time.time()

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """`user_config: {index_dir: ...}` loads (first call) or hot-swaps the index. A replica without an index
        raises (the deployment fails with the loader's message); a replica that is serving logs a refused index and
        reports it in /version (last_swap_error) instead of raising, which would make Serve replace it."""
        index_dir = str((user_config or {}).get("index_dir") or "")
        if self.service is None:
            self.service = IndexService(replace(self.cfg, index_dir=index_dir))
            return
        current = self.service.index
        if index_dir and Path(index_dir).resolve() == current.path.resolve() and _manifest_sha(index_dir) == current.manifest_sha256:
            return
        try:  # hashing a large index must not stall the event loop that keeps serving the old one
            await asyncio.to_thread(self.service.swap, index_dir)
        except CorruptIndexError as e:
            log.error(f"user_config swap refused: {e}")

    async def __call__(self, request: Request) -> Response:
        scope = request.scope  # read directly: Starlette's request.url builds and parses a full URL on each request
        method, path = scope["method"], scope["path"]
        max_body = self.service.cfg.max_body_bytes
        body = b""
        if method in ("POST", "PUT", "PATCH"):
            declared = _content_length(scope)
            if declared is not None and (not declared.isdigit() or int(declared) > max_body):
                return _json(413, {"error": f"body larger than {max_body} bytes (or bad Content-Length)"})
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_body:
                    return _json(413, {"error": f"body larger than {max_body} bytes"})
                chunks.append(chunk)
            body = b"".join(chunks)
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


def _manifest_sha(index_dir: str) -> str | None:
    from llm_i2i.io import sha256_file

    p = Path(index_dir) / "manifest.json"
    return sha256_file(p) if p.is_file() else None


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
    """The declarative Serve config (the shape of serve_apps/config.yaml) for `cfg`."""
    args = {k: v for k, v in to_dict(cfg).items() if k not in ("index_dir", "replicas", "host", "port", "ingress")}
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": cfg.host, "port": cfg.port},
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
