"""Ray job: the `sft_generator` stage of the LLM-I2I pipeline (logic in llm_i2i/pipeline/stages.py).

    ray job submit --working-dir . -- python -m ray_jobs.sft_generator --config configs/quickstart.yaml --out out/run
"""

from llm_i2i.pipeline.jobs import stage_main
from llm_i2i.pipeline.stages import real_llm_ops
from ray_jobs.train_llm import RaySFTRunner

if __name__ == "__main__":
    raise SystemExit(stage_main("sft_generator", ops=real_llm_ops(RaySFTRunner())))
