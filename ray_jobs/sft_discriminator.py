"""Ray job: the `sft_discriminator` stage of the LLM-I2I pipeline (logic in llm_i2i/pipeline/stages.py).

    ray job submit --working-dir . -- python -m ray_jobs.sft_discriminator --config configs/quickstart.yaml --out out/run
"""

from llm_i2i.pipeline.jobs import stage_main
from llm_i2i.pipeline.stages import real_llm_ops
from ray_jobs.train_llm import RaySFTRunner

if __name__ == "__main__":
    raise SystemExit(stage_main("sft_discriminator", ops=real_llm_ops(RaySFTRunner())))
