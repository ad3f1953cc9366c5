"""Ray Serve app for the I2I index: a thin wrapper over `llm_i2i.index.service.IndexService`.

HTTP: GET /similar/{item_id}?k=, POST /recommend, GET /healthz, GET /version, POST /admin/swap (token).
Handle API (in-cluster callers): `handle.similar.remote(item_id, k)`, `handle.recommend.remote(recent_items, k,
exclude_seen)`, `handle.version.remote()`; client mistakes raise `RequestError` (a ValueError with `.status`).
Hot swap: change `user_config.index_dir` (`serve deploy` / `serve.run` again) or POST /admin/swap; a new index is
loaded and verified before it replaces the old one, and a refused one leaves the old one serving.

No request batching: one /recommend merge costs ~0.1 ms in-process against ~2 ms of HTTP/proxy overhead per request
(benchmarks/results/serve_load.md), so batching could only add queueing delay.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

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
        setup_logging()
        cfg = from_dict(ServeConfig, config)
        cfg.admin_token = cfg.admin_token or os.environ.get("LLM_I2I_ADMIN_TOKEN", "")
        self.service = IndexService(cfg)
        self.replica_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.started_unix = time.time()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """`user_config: {index_dir: ...}` hot-swaps the index. A refused index is logged and reported by /version
        (last_swap_error) but never raised: raising would make Serve replace replicas that are serving fine."""
        index_dir = (user_config or {}).get("index_dir")
        if not index_dir:
            return
        current = self.service.index
        if Path(index_dir).resolve() == current.path.resolve() and _manifest_sha(index_dir) == current.manifest_sha256:
            return
        try:
            self.service.swap(str(index_dir))
        except CorruptIndexError as e:
            log.error(f"user_config swap refused: {e}")

    async def __call__(self, request: Request) -> Response:
        max_body = self.service.cfg.max_body_bytes
        body = b""
        if request.method in ("POST", "PUT", "PATCH"):
            declared = request.headers.get("content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > max_body):
                return _json(413, {"error": f"body larger than {max_body} bytes (or bad Content-Length)"})
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_body:
                    return _json(413, {"error": f"body larger than {max_body} bytes"})
                chunks.append(chunk)
            body = b"".join(chunks)
        status, payload = self.service.handle_http(
            request.method, request.url.path, request.query_params, request.headers, body
        )
        if request.url.path.rstrip("/") == "/version" and status == 200:
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


def _json(status: int, payload: dict[str, Any]) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status_code=status, media_type="application/json")


def build_app(args: dict[str, Any]) -> serve.Application:
    """App builder for `serve run serve_apps/config.yaml` and `llm-i2i serve`: `args` are `ServeConfig` fields.
    A relative index_dir is resolved against the builder's working directory, so replicas get an absolute path."""
    cfg = from_dict(ServeConfig, dict(args))
    cfg.index_dir = str(Path(cfg.index_dir).resolve()) if cfg.index_dir else ""
    deployment = I2IIndexDeployment.options(
        num_replicas=cfg.replicas,
        ray_actor_options={"num_cpus": cfg.replica_cpus},
        user_config={"index_dir": cfg.index_dir},
    )
    return deployment.bind(to_dict(cfg))

