"""Fault runs of the I2I Serve app under /recommend load (issue 18), on loopback, bounded in count and time. It builds
on benchmarks/serve_load.py (indexes, load client process, cluster start, report writing) and adds three faults:

1. broken swaps: while /recommend runs, POST /admin/swap and a user_config redeploy to each broken index of
   tests/index/fixtures.BROKEN_INDEXES (bad manifest types, huge k, truncated file, files not listed, ...). Target: the
   old index keeps serving on every replica, 0 responses >= 500 and 0 failed requests.
2. slow bodies: 64 connections send their headers and then drip the body a byte at a time, reopened as soon as the
   server closes them, for the whole phase, while normal /recommend load runs. Target: p99 of the normal requests
   <= 1 s; the same load without the slow connections, in the same run, is the reference.
3. replica kill: with 2 replicas, swap to index B (admin API), then kill one replica mid-load. Target: its replacement
   serves B, the current version (failed requests during the kill are counted and reported).

  python -m benchmarks.serve_faults --data default      # from the repository root; takes the heavy-work lock

Writes benchmarks/results/serve_faults.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks._common import RESULTS, REPO, provenance, run_locked, run_record, write_result
from benchmarks.serve_load import (TOKEN, LoadRun, Workload, _post, add_workload_arguments, app_urls, failed_requests,
                                   prepare_workload, start_ray)

ADMIN = {"authorization": f"Bearer {TOKEN}"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_workload_arguments(ap)
    ap.add_argument("--seconds", type=float, default=15.0, help="duration of the slow-body phase and its reference")
    ap.add_argument("--slow", type=int, default=64, help="slow-body connections held open")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--port", type=int, default=8124)
    ap.add_argument("--ingress", choices=("proxy", "direct"), default="proxy")
    ap.add_argument("--out", default=str(RESULTS / "serve_faults"), help="results path without extension")
    ap.add_argument("--slow-client", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


# ---------------------------------------------------------------- slow-body client process ------------------------
async def _slow_bodies(spec: dict[str, Any]) -> dict[str, Any]:
    """`connections` clients that each send a POST's headers (Content-Length: `declared`) and then one body byte every
    `drip_s`, never finishing; when the server answers or closes, the client reconnects at once, until `seconds`."""
    deadline = time.monotonic() + spec["seconds"]
    statuses: dict[str, int] = {}
    held_s: list[float] = []
    opened = 0
    head = (f"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {spec['declared']}\r\n\r\n").encode()

    async def one() -> None:
        nonlocal opened
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                reader, writer = await asyncio.open_connection(spec["host"], spec["port"])
            except OSError as e:
                statuses[f"connect {type(e).__name__}"] = statuses.get(f"connect {type(e).__name__}", 0) + 1
                await asyncio.sleep(0.1)
                continue
            opened += 1
            writer.write(head + b"{")
            answer = asyncio.ensure_future(reader.readline())
            while not answer.done() and time.monotonic() < deadline:
                await asyncio.wait([answer], timeout=spec["drip_s"])
                if not answer.done():
                    try:
                        writer.write(b" ")
                        await writer.drain()
                    except OSError:
                        break
            if answer.done() and not answer.exception():
                line = answer.result()
                key = line.split(b" ")[1].decode() if line.startswith(b"HTTP/") else "closed"
                statuses[key] = statuses.get(key, 0) + 1
                held_s.append(time.monotonic() - t0)
            else:
                answer.cancel()
                statuses["held to the end"] = statuses.get("held to the end", 0) + 1
            writer.close()

    await asyncio.gather(*(one() for _ in range(spec["connections"])))
    return {"connections": spec["connections"], "opened": opened, "statuses": statuses,
            "max_held_s": max(held_s, default=0.0), "median_held_s": sorted(held_s)[len(held_s) // 2] if held_s else 0.0}


def slow_client_main(spec_path: str, out_path: str) -> int:
    Path(out_path).write_text(json.dumps(asyncio.run(_slow_bodies(json.loads(Path(spec_path).read_text())))))
    return 0


class SlowRun:
    """The slow-body connections in their own process."""

    def __init__(self, tmp: Path, spec: dict[str, Any]):
        self.spec, self.out = tmp / "slow.spec.json", tmp / "slow.out.json"
        self.spec.write_text(json.dumps(spec))
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.serve_faults", "--slow-client", str(self.spec),
                                      str(self.out)], cwd=REPO)

    def result(self) -> dict[str, Any]:
        if self.proc.wait() != 0:
            raise RuntimeError(f"slow-body client failed (exit {self.proc.returncode})")
        return json.loads(self.out.read_text())


# ---------------------------------------------------------------- fault phases ------------------------------------
def replica_versions(handle: Any, calls: int = 40) -> dict[str, str]:
    """replica_id -> index_version, from `calls` handle calls spread over the replicas by Serve's router."""
    out = {}
    for _ in range(calls):
        v = handle.version.remote().result(timeout_s=30)
        out[v["replica_id"]] = v["index_version"]
    return out


def _load(args: argparse.Namespace, w: Workload, url: list[str], name: str, seconds: float, **kw: Any) -> LoadRun:
    return LoadRun(w.tmp, name, url, w.recommend, seconds, args.concurrency, args.max_requests, **kw)


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    """A load run without its per-request data, with the fault targets' counts."""
    out = {k: v for k, v in run.items() if k not in ("latencies_s", "timeline")}
    out["failed_requests"] = failed_requests(run)
    out["responses_ge_500"] = sum(n for s, n in run["statuses"].items() if int(s) >= 500)
    return out


def broken_swaps(args: argparse.Namespace, w: Workload, cfg: Any, url: list[str], handle: Any) -> dict[str, Any]:
    """Every broken index, through the admin API and through user_config, under /recommend load."""
    from llm_i2i.index.store import read_neighbors, write_index
    from llm_i2i.progress import log
    from serve_apps.i2i_app import deploy
    from tests.index.fixtures import BROKEN_INDEXES

    nb_b = read_neighbors(w.b)
    broken = {}
    for kind, (breaker, _) in BROKEN_INDEXES.items():
        broken[kind] = write_index(nb_b, w.tmp / f"broken_{kind}", {"backbone": "swing"})
        breaker(broken[kind])
    before = sorted(set(replica_versions(handle).values()))
    run = _load(args, w, url, "broken", 900.0, track_versions=True)
    time.sleep(1.0)
    events = []
    for kind, d in broken.items():
        status, payload = _post(url[0] + "/admin/swap", {"index_dir": str(d)}, ADMIN)
        t0 = time.perf_counter()
        deploy(replace(cfg, index_dir=str(d)))  # the same index through user_config: each replica refuses it
        events.append({"kind": kind, "admin_status": status, "admin_error": str(payload.get("error"))[:200],
                       "user_config_seconds": round(time.perf_counter() - t0, 2),
                       "serving_after": sorted(set(replica_versions(handle).values()))})
        log.info(f"broken swap {kind}: admin {status}, serving {events[-1]['serving_after']}")
    deploy(cfg)  # user_config back to the index every replica still serves
    time.sleep(1.0)
    load = _summary(run.stop())
    return {"serving_before": before, "events": events, "load": load,
            "old_index_kept": all(e["serving_after"] == before and e["admin_status"] == 422 for e in events)}


def slow_bodies(args: argparse.Namespace, w: Workload, cfg: Any, url: list[str]) -> dict[str, Any]:
    """Normal /recommend load alone (the reference), then the same load beside `args.slow` slow-body connections."""
    from llm_i2i.progress import log

    reference = _summary(_load(args, w, url, "reference", args.seconds).result())
    host, port = url[0].rsplit("/", 1)[1].split(":")
    slow = SlowRun(w.tmp, {"host": host, "port": int(port), "connections": args.slow, "seconds": args.seconds + 3.0,
                           "drip_s": 0.2, "declared": 4096})
    time.sleep(2.0)  # every slow connection is open and holding its slot before the measured load starts
    loaded = _summary(_load(args, w, url, "beside_slow", args.seconds).result())
    held = slow.result()
    log.info(f"slow bodies: reference p99 {reference['p99_ms']:.1f} ms, beside {args.slow} slow connections "
             f"p99 {loaded['p99_ms']:.1f} ms; slow connections {held}")
    return {"reference": reference, "beside_slow": loaded, "slow_connections": held,
            "body_timeout_s": cfg.body_timeout_s}


def replica_kill(args: argparse.Namespace, w: Workload, url: list[str], handle: Any) -> dict[str, Any]:
    """Swap to index B through the admin API, then kill one replica under load: its replacement must serve B."""
    import ray
    from ray.serve.context import _get_global_client

    from llm_i2i.progress import log
    from serve_apps.i2i_app import APP_NAME, DEPLOYMENT_NAME

    status, swap = _post(url[0] + "/admin/swap", {"index_dir": str(w.b)}, ADMIN)
    swapped = replica_versions(handle)
    run = _load(args, w, url, "kill", 900.0, track_versions=True)
    time.sleep(2.0)
    details = _get_global_client().get_serve_details()["applications"][APP_NAME]["deployments"][DEPLOYMENT_NAME]
    victim = details["replicas"][0]["actor_name"]
    t0 = time.perf_counter()
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    deadline = time.monotonic() + 120
    while not (fresh := {r: v for r, v in replica_versions(handle).items() if r not in swapped}) \
            and time.monotonic() < deadline:
        time.sleep(0.5)
    back_s = time.perf_counter() - t0
    time.sleep(2.0)
    load = _summary(run.stop())
    log.info(f"replica kill: replacement {fresh} after {back_s:.1f} s; load {load['statuses']} {load['errors']}")
    return {"swap_status": status, "swap": {k: swap.get(k) for k in ("applied_to", "replicas", "rollout")},
            "current_version": w.ix_b.version, "before_kill": swapped, "replacement": fresh,
            "replacement_seconds": back_s, "replacement_on_current": bool(fresh) and set(fresh.values()) == {w.ix_b.version},
            "load": load}


def run_faults(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    """The three fault phases against one Serve instance; returns the result document."""
    import ray
    from ray import serve

    from llm_i2i.index.service import ServeConfig
    from serve_apps.i2i_app import APP_NAME, deploy

    record = run_record("serve_faults", argv)
    w = prepare_workload(args)
    cfg = ServeConfig(index_dir=str(w.a), port=args.port, replicas=args.replicas, max_recent=args.m,
                      ingress=args.ingress, replica_cpus=0.25)
    start_ray(cfg)
    handle = deploy(cfg)
    url = app_urls(cfg, {APP_NAME: args.replicas})[APP_NAME]
    _load(args, w, url, "warmup", 2.0).result()
    results = {"broken_swaps": broken_swaps(args, w, cfg, url, handle),
               "slow_bodies": slow_bodies(args, w, cfg, url),
               "replica_kill": replica_kill(args, w, url, handle)}
    serve.shutdown()
    ray.shutdown()
    b, s, k = results["broken_swaps"], results["slow_bodies"], results["replica_kill"]
    return {
        **record,
        "ray": ray.__version__,
        "params": {k: v for k, v in vars(args).items() if k not in ("slow_client", "out")},
        "serve_config": {k: getattr(cfg, k) for k in ("max_ongoing_requests", "max_queued_requests", "request_timeout_s",
                                                       "body_timeout_s", "replicas", "ingress")},
        "index": {**w.info, "k": w.ix_a.k, "version_a": w.ix_a.version, "version_b": w.ix_b.version},
        "results": results,
        "targets": {
            "broken_swaps_old_index_kept": b["old_index_kept"],
            "broken_swaps_zero_ge_500": b["load"]["responses_ge_500"] == 0,
            "broken_swaps_zero_failed": b["load"]["failed_requests"] == 0,
            "slow_bodies_p99_le_1s": s["beside_slow"]["p99_ms"] <= 1000.0,
            "slow_bodies_zero_failed": s["beside_slow"]["failed_requests"] == 0,
            "killed_replica_back_on_current_version": k["replacement_on_current"],
        },
    }


def main(argv: list[str] | None = None) -> int:
    from llm_i2i.progress import log, setup_logging

    args = parse_args(argv)
    if args.slow_client:  # the slow-body connections' own process
        return slow_client_main(*args.slow_client)
    setup_logging()
    report = run_faults(args, argv)
    write_result(Path(args.out), report, _markdown(report))
    log.info(f"wrote {args.out}.json / .md; targets {report['targets']}")
    return 0


def _markdown(r: dict[str, Any]) -> str:
    res, c = r["results"], r["serve_config"]
    b, s, k = res["broken_swaps"], res["slow_bodies"], res["replica_kill"]
    lines = [
        "# Serve fault runs: broken swaps, slow bodies, a killed replica, under /recommend load",
        "",
        provenance(r) + f" Ray {r['ray']}.",
        f"Index: Swing on {r['index']['dataset']} ({r['index']['items']:,} items, K={r['index']['k']}); {c['replicas']} "
        f"replicas, ingress {c['ingress']}; max_ongoing_requests {c['max_ongoing_requests']}, max_queued_requests "
        f"{c['max_queued_requests']}, request_timeout_s {c['request_timeout_s']}, body_timeout_s {c['body_timeout_s']}. "
        f"Normal load: closed loop, {r['params']['concurrency']} connections, M={r['params']['m']} recent items per request.",
        "",
        "## Broken swaps under load",
        "",
        f"Serving before: {b['serving_before']}. Load during all swaps: {b['load']['requests']:,} requests, statuses "
        f"{b['load']['statuses']}, transport errors {b['load']['errors']}, versions {b['load']['versions']}: "
        f"**{b['load']['failed_requests']} failed, {b['load']['responses_ge_500']} responses >= 500**.",
        "",
        "| broken index | POST /admin/swap | user_config redeploy (s) | serving after | error |",
        "|---|---|---|---|---|",
        *[f"| {e['kind']} | {e['admin_status']} | {e['user_config_seconds']} | {', '.join(e['serving_after'])} | "
          f"{e['admin_error'].split('still serving ')[-1].replace('|', '/')[:150]} |" for e in b["events"]],
        "",
        "## Slow-body connections",
        "",
        f"{s['slow_connections']['connections']} connections send their headers (Content-Length 4096) and then one byte "
        f"every 0.2 s, reconnecting when answered: {s['slow_connections']['opened']} opened, answers "
        f"{s['slow_connections']['statuses']}, held at most {s['slow_connections']['max_held_s']:.1f} s.",
        "",
        "| normal /recommend load | requests | QPS | p50 ms | p99 ms | max ms | failed |",
        "|---|---|---|---|---|---|---|",
        *[f"| {name} | {x['requests']:,} | {x['qps']:.0f} | {x['p50_ms']:.1f} | {x['p99_ms']:.1f} | {x['max_ms']:.0f} | "
          f"{x['failed_requests']} |" for name, x in (("alone (reference)", s["reference"]),
                                                     (f"beside {s['slow_connections']['connections']} slow bodies", s["beside_slow"]))],
        "",
        "## Replica killed mid-load",
        "",
        f"POST /admin/swap to index B: {k['swap_status']}, {k['swap']}; replicas before the kill: {k['before_kill']}. "
        f"The replacement {k['replacement']} answered after {k['replacement_seconds']:.1f} s, on the current version "
        f"{k['current_version']}: **{k['replacement_on_current']}**. Load: {k['load']['requests']:,} requests, statuses "
        f"{k['load']['statuses']}, transport errors {k['load']['errors']} (requests in flight on the killed replica).",
        "",
        "## Targets",
        "",
        *[f"- {name}: {'PASS' if ok else 'FAIL'}" for name, ok in r["targets"].items()],
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main() if "--slow-client" in sys.argv else run_locked(main))
