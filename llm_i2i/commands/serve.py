"""Serve an I2I index over HTTP with Ray Serve (127.0.0.1 by default):

  GET /similar/{item_id}?k=   POST /recommend {"recent_items": [...oldest first], "k": n, "exclude_seen": bool}
  GET /healthz   GET /version   POST /admin/swap {"index_dir": ...} (Authorization: Bearer $LLM_I2I_ADMIN_TOKEN)

Hot swap on a running cluster: run this command again with the new --index, `--address auto --detach`, or POST
/admin/swap; every replica loads and verifies the new index while the old one keeps serving (a corrupt one is refused
here first), and a restarted replica starts on it. The replicas read the admin token from their own environment
(a local cluster inherits this process's). docs/serving.md.
"""

from __future__ import annotations

import argparse
import os
import time

from llm_i2i.commands._common import load_command_config
from llm_i2i.index.service import ServeConfig, read_admin_token
from llm_i2i.index.store import load_index
from llm_i2i.progress import log
from llm_i2i.raycluster import LOCAL, init_ray, resolve_address

NAME = "serve"
HELP = "serve an I2I index over HTTP (Ray Serve): /similar, /recommend, /healthz, /version"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", help="index directory written by `llm-i2i index` / `baseline` (overrides the config)")
    p.add_argument("--host", help="HTTP host (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="HTTP port (default 8000)")
    p.add_argument("--replicas", type=int, help="number of replicas (default 1)")
    p.add_argument("--ingress", choices=("proxy", "direct"),
                   help="proxy (default): Serve's HTTP proxy on --port; direct: each replica serves HTTP on its own port")
    p.add_argument("--config", help="YAML with ServeConfig fields (top level or under 'serve')")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a ServeConfig field")
    p.add_argument("--admin-token-env",
                   help="environment variable the replicas read the admin token from (default LLM_I2I_ADMIN_TOKEN; "
                        "unset: POST /admin/swap disabled); the token itself never enters the Serve config")
    p.add_argument("--address", help="Ray cluster address ('auto' joins the running one); default: RAY_ADDRESS, "
                                     "else a local Ray on 127.0.0.1")
    p.add_argument("--detach", action="store_true", help="return after deploying instead of serving until Ctrl-C")


def resolve_config(args: argparse.Namespace) -> ServeConfig:
    cfg = load_command_config(ServeConfig, args, "serve")
    for field, value in (("index_dir", args.index), ("host", args.host), ("port", args.port), ("replicas", args.replicas),
                         ("ingress", args.ingress), ("admin_token_env", args.admin_token_env)):
        if value is not None:
            setattr(cfg, field, value)
    cfg.validate()
    if not cfg.index_dir:
        raise ValueError("no index: pass --index DIR (or index_dir in --config)")
    return cfg


def run(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    index = load_index(cfg.index_dir)  # refuse a corrupt index here, with the loader's message, before deploying
    log.info(f"index {index.version} ({index.n_items} items, K={index.k}, backbone {index.manifest.get('backbone')})")

    from ray import serve

    from serve_apps.i2i_app import deploy, ray_env, replica_urls

    local = resolve_address(args.address) == LOCAL
    if local:
        os.environ.update(ray_env(cfg))  # the local cluster's processes inherit it (and the admin token variable)
    init_ray(args.address)
    deploy(cfg)
    log.info(f"serving on http://{cfg.host}:{cfg.port} ({cfg.replicas} replica(s)); "
             f"admin swap {'enabled' if read_admin_token(cfg) else 'disabled'} here (${cfg.admin_token_env})")
    if cfg.ingress == "direct":
        log.info(f"direct ingress, no proxy hop: replicas at {', '.join(replica_urls(cfg.host))} "
                 f"(the proxy on port {cfg.port} also answers)")
    if args.detach:
        if local:
            log.warning("--detach with --address local: the local cluster stops when this process exits")
        return 0
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        log.info("shutting down")
        serve.shutdown()
    return 0
