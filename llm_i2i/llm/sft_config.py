"""The SFT stage's typed configuration, validated when loaded."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from llm_i2i.config import config_hash, result_config
from llm_i2i.llm.modeling import ModelConfig
from llm_i2i.llm.scoring import MAX_BATCH_TOKENS

# where discriminator negatives come from (sft_data.discriminator_pairs); `negatives` joins one or more with "+"
NEGATIVE_SOURCES = ("random", "popular", "hard", "generator")


def negative_sources(negatives: str) -> list[str]:
    """`random+generator` -> ["random", "generator"]; refuses an unknown, repeated or empty source."""
    sources = negatives.split("+")
    if not sources or len(set(sources)) != len(sources) or any(s not in NEGATIVE_SOURCES for s in sources):
        raise ValueError(f"sft.negatives must join distinct sources from {NEGATIVE_SOURCES} with '+' "
                         f"(e.g. random+generator), got {negatives!r}")
    return sources


@dataclass
class SFTConfig:
    role: str = "generator"  # generator | discriminator
    model: ModelConfig = field(default_factory=ModelConfig)
    # the lr decays linearly over `epochs` (to min_lr_ratio at the last step): the schedule's length, and an upper
    # bound `patience` may cut short. None: the role's default, 10 for the generator, 1 for the discriminator (which
    # starts from the fine-tuned generator and peaks at epoch 1). With 30 for both, the generator stopped at epoch
    # 19-23 and the discriminator after 2 with the lr still at 40% and 95% of its peak, not annealed
    # (benchmarks/results/sft_schedule.md); with item tokens placed by text the generator peaks sooner, and 10
    # annealed epochs beat 20 on Beauty (Swing +37.3% against +31.0%, benchmarks/results/item_text_init.md)
    epochs: int | None = None
    # epochs without a better validation metric before stopping (0: run every epoch); None: the role's default,
    # 3 for the generator, 1 for the discriminator (which starts from the fine-tuned generator and peaks at epoch 1).
    # Measured with no config on one idle machine (beauty_patience.md): with patience 2 on 4000 users the generator
    # stopped on noise (Beauty at epoch 13, Toys at 18); patience 3 on every validation user went to epoch 19 / 23
    # and gave Beauty Swing R@10 +28.4% (was +22.8%), Toys +14.3% (was +14.2%), for about 6 more minutes each
    patience: int | None = None
    # lr, warmup_steps, batch_size, positions_per_user and the model's dropout: the settings that generalise best
    # with no config on both datasets, measured on one idle machine (beauty_idle.md: Beauty Swing R@10 +22.8% and
    # +25.6% in two runs of about 22 min, every backbone up, against +14.9% in 14.9 min with lr 3e-3, warmup 30,
    # batch 128, 1 positive, no dropout; toys_sft_settings.md: Toys +14.2% and +12.6%, every backbone up, against
    # +10.3% with the previous defaults)
    lr: float = 2e-3  # paper: 5e-5 for a 7B base; a small scratch model needs far more
    weight_decay: float = 0.0
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1  # linear decay to lr * this at the last step
    batch_size: int = 64  # paper: 16 (7B); examples per optimizer step over all workers
    max_length: int = 64  # target tokens per generator training sequence; longer histories are chunked
    max_history: int = 10  # items in inference prompts and discriminator training prompts
    alpha: float = 4.0  # loss weight of long-tail targets (paper)
    beta: float = 1.0  # loss weight of the other targets
    long_tail_fraction: float = 0.2
    neg_ratio: int = 1  # discriminator negatives per positive
    positions_per_user: int = 3  # discriminator positives per user: the last train transition and earlier random ones
    negatives: str = "random"  # discriminator negatives: random (paper) | popular | hard (Swing) | generator, or several: random+hard
    titles: bool = False  # put item titles in the prompts
    num_workers: int = 1
    use_ray: bool = False
    use_deepspeed: bool = True  # on the Ray path
    zero_stage: int = 2  # 0-2; ZeRO-3 is refused (see validate)
    use_gpu: bool | None = None  # None: the Ray cluster's GPUs decide (in-process: whether CUDA is usable)
    # CPUs each Ray Train worker reserves; None: 0.5 beside a GPU, on CPU an equal share of the cluster's free CPUs
    # (Ray gives a worker as many torch threads as whole CPUs it reserved; `ray_jobs/train_llm.py: worker_cpus`)
    cpus_per_worker: float | None = None
    seed: int = 0
    checkpoint_every: int = 200  # optimizer steps between committed resume states and progress reports
    # validation users for the per-epoch model selection (0: all); None: the role's default, all for the generator
    # (its NDCG@10 on 4000 users moves by more than an epoch's gain), 4000 for the discriminator (AUC pairs)
    eval_users: int | None = None
    # validation scoring's batches: at most eval_batch_size prompts and eval_batch_tokens padded tokens per forward
    # pass (the tokens bound memory: a base with titles in the prompt needs the cap, `llm/scoring.py`)
    eval_batch_size: int = 512
    eval_batch_tokens: int = MAX_BATCH_TOKENS
    stop_after_steps: int | None = None  # stop this invocation after N steps, leaving the resume state
    threads: int | None = None  # torch intra-op threads (None: every core when idle, fewer under load)
    # how a run goes, not which weights come out: left out of the SFT stage's cache key (`config.result_config`)
    # and of `run_hash`; stop_after_steps is in the stage key, since a stopped run's weights are not a finished model
    EXECUTION_ONLY = ("threads", "checkpoint_every", "eval_batch_size", "eval_batch_tokens", "cpus_per_worker")

    def validate(self) -> None:
        if self.role not in ("generator", "discriminator"):
            raise ValueError(f"sft.role must be generator|discriminator, got {self.role!r}")
        if self.epochs is not None and self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("sft: epochs, batch_size and lr must be positive")
        if self.patience is not None and self.patience < 0:
            raise ValueError(f"sft.patience must be >= 0, got {self.patience}")
        if self.eval_users is not None and self.eval_users < 0:
            raise ValueError(f"sft.eval_users must be >= 0 (0: all), got {self.eval_users}")
        if self.eval_batch_size < 1 or self.eval_batch_tokens < 1:
            raise ValueError(f"sft.eval_batch_size and sft.eval_batch_tokens must be >= 1, got {self.eval_batch_size} "
                             f"and {self.eval_batch_tokens}")
        if self.alpha <= 0 or self.beta <= 0:
            raise ValueError("sft: alpha and beta must be positive")
        if self.zero_stage == 3:
            # ZeRO-3 partitions the parameters themselves: the resume state and the final checkpoint read full
            # weights from every rank's module, which under stage 3 holds empty shards.
            raise ValueError("sft.zero_stage=3 is not supported (weights are partitioned; checkpoints need full "
                             "weights); use 2, which partitions gradients and optimizer state")
        if self.zero_stage not in (0, 1, 2):
            raise ValueError(f"sft.zero_stage must be 0, 1 or 2, got {self.zero_stage}")
        negative_sources(self.negatives)
        if self.num_workers < 1 or self.neg_ratio < 1 or self.positions_per_user < 1:
            raise ValueError("sft: num_workers, neg_ratio and positions_per_user must be >= 1")
        if (self.cpus_per_worker is not None and self.cpus_per_worker <= 0) or self.checkpoint_every < 1:
            raise ValueError("sft: cpus_per_worker and checkpoint_every must be positive")
        self.model.validate()

    @property
    def epoch_budget(self) -> int:
        """`epochs` resolved for this role."""
        if self.epochs is not None:
            return self.epochs
        return 10 if self.role == "generator" else 1

    @property
    def early_stop_patience(self) -> int:
        """`patience` resolved for this role."""
        if self.patience is not None:
            return self.patience
        return 3 if self.role == "generator" else 1

    @property
    def selection_users(self) -> int | None:
        """`eval_users` resolved for this role: how many validation users select the epoch (None: all)."""
        n = self.eval_users if self.eval_users is not None else (0 if self.role == "generator" else 4000)
        return n or None

    def resolved(self) -> "SFTConfig":
        """This config with the role defaults written in, so a hash of it changes when a role default does."""
        return replace(self, epochs=self.epoch_budget, patience=self.early_stop_patience,
                       eval_users=self.selection_users or 0,
                       model=replace(self.model, item_init=self.model.resolved_item_init))

    @property
    def distributed(self) -> bool:
        return self.num_workers > 1 or self.use_ray

    def run_hash(self) -> str:
        """Hash of what determines the trained weights (not how often we checkpoint, when we stop, or where)."""
        d = result_config(self.resolved())
        for k in ("stop_after_steps", "use_gpu"):
            d.pop(k)
        return config_hash(d)
