"""Ray Tune sweep (α, confidence threshold, recall number N, Swing α1/α2/β) on VALIDATION Recall@10.

    python -m ray_jobs.tune_sweep --config configs/tune_beauty.yaml --out out/beauty/tune
Writes OUT/results.parquet, OUT/results.md (sorted) and OUT/best.json. Trials use `cpus_per_trial` CPUs.
"""

from __future__ import annotations

import argparse
import os

from llm_i2i.io import write_json, write_parquet, write_text
from llm_i2i.pipeline.artifacts import materialize, portable
from llm_i2i.pipeline.stages import real_llm_ops
from llm_i2i.pipeline.tune import OBJECTIVE, load_sweep, prepare_generators, summarize, trial_metrics
from llm_i2i.progress import log, setup_logging
from llm_i2i.raycluster import init_ray
from ray_jobs.runners import ray_runners


def main(argv: list[str] | None = None) -> int:
    import pyarrow as pa
    from ray import tune

    setup_logging()
    p = argparse.ArgumentParser(prog="ray_jobs.tune_sweep")
    p.add_argument("--config", help="sweep YAML (SweepConfig fields)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", required=True, help="directory for results.parquet / results.md / best.json")
    p.add_argument("--address", help="Ray address; default: RAY_ADDRESS or a local Ray")
    args = p.parse_args(argv)
    sweep = load_sweep(args.config, args.set)
    init_ray(args.address)
    # a URI run's artifacts travel as (artifact, content hash): each trial reads its node's own copy
    data_dir, scored = portable(prepare_generators(sweep, real_llm_ops(ray_runners())))

    def trainable(params: dict) -> None:
        tune.report(trial_metrics(params, *materialize((data_dir, scored[params["generator"]])), sweep.eval_preset))

    grid = sweep.grid(list(scored))
    space = {k: tune.grid_search(sorted({g[k] for g in grid})) for k in grid[0]}
    log.info(f"sweep: {len(grid)} trials, {sweep.cpus_per_trial} CPU each, objective valid {OBJECTIVE}")
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": sweep.cpus_per_trial}),
        param_space=space,
        tune_config=tune.TuneConfig(metric=OBJECTIVE, mode="max"),
        run_config=tune.RunConfig(name="llm_i2i_sweep", storage_path=os.path.abspath(os.path.join(args.out, "ray_tune")),
                                  verbose=1),
    )
    results = tuner.fit()
    rows = [{**r.config, **{k: r.metrics[k] for k in ("recall@10", "ndcg@10", "long_tail_recall@10", "synthetic_kept")}}
            for r in results if r.error is None and r.metrics]
    failed = sum(1 for r in results if r.error is not None)
    table, best = summarize(rows)
    write_parquet(pa.Table.from_pylist(rows), os.path.join(args.out, "results.parquet"))
    write_text(f"# Sweep (objective: validation {OBJECTIVE}, split='valid'; test never used)\n\n{table}\n",
               os.path.join(args.out, "results.md"))
    write_json({"objective": f"valid {OBJECTIVE}", "best": best, "trials": len(rows), "failed_trials": failed,
                "sweep": sweep.__dict__}, os.path.join(args.out, "best.json"))
    log.info(f"best: {best}")
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
