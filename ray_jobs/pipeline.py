"""Ray job: every LLM-I2I stage in order (finished ones skipped), then report.json/report.md/plots.

    ray job submit --working-dir . -- python -m ray_jobs.pipeline --config configs/beauty.yaml --out out/beauty
"""

from ray_jobs.runners import stage_main

if __name__ == "__main__":
    raise SystemExit(stage_main(None))
