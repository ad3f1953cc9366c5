"""Ray job: the `train_i2i` stage of the LLM-I2I pipeline (logic in llm_i2i/pipeline/stages.py).

    ray job submit --working-dir . -- python -m ray_jobs.train_i2i --config configs/quickstart.yaml --out out/run
"""

from ray_jobs.runners import stage_main

if __name__ == "__main__":
    raise SystemExit(stage_main("train_i2i"))
