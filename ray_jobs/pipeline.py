"""Ray job: every LLM-I2I stage in order (finished ones skipped), then report.json/report.md/plots.

    ray job submit --working-dir . -- python -m ray_jobs.pipeline --config configs/beauty.yaml --out out/beauty
"""

from llm_i2i.pipeline.jobs import stage_main
from llm_i2i.pipeline.stages import real_llm_ops
from ray_jobs.train_llm import RaySFTRunner

if __name__ == "__main__":
    raise SystemExit(stage_main(None, ops=real_llm_ops(RaySFTRunner())))
