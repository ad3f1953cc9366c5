"""The evaluation protocol, in one explicit config (like RecBole's eval_args).

Two presets, both full ranking over all items with one held-out positive per user:

* ``paper`` (default) - what reproduces the LLM-I2I paper's Table 2 (see ../shared/notes/paper-protocol.md):
  the I2I model is fitted on items[:-2]; the trigger is the user's single most recent item (M=1);
  the ranking is that item's neighbour list as is - history NOT masked, short lists NOT padded
  (an item outside the merged list is never a hit).
* ``serving`` - how the index is used online: the user's M=100 most recent distinct items fan out
  through the index, scores are summed, already-seen items are masked.

Masking defaults to off because the paper's numbers are only reproduced without it; it is a flag.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

PRESETS = {
    "paper": dict(num_triggers=1, merge="sum", mask_history=False),
    "serving": dict(num_triggers=100, merge="sum", mask_history=True),
}


@dataclass
class EvalConfig:
    preset: str = "paper"
    split: str = "test"  # "valid" for model selection; "test" only for the final report
    ks: tuple[int, ...] = (5, 10, 20, 50, 100, 200)
    num_triggers: int = 1  # M: the user's most recent distinct items that fan out through the index
    merge: str = "sum"  # sum | max | recency
    recency_decay: float = 0.8
    mask_history: bool = False
    long_tail_fraction: float = 0.2

    def validate(self) -> None:
        if self.preset not in PRESETS and self.preset != "custom":
            raise ValueError(f"eval.preset must be one of {sorted(PRESETS)} or 'custom', got {self.preset!r}")
        if self.split not in ("valid", "test"):
            raise ValueError(f"eval.split must be 'valid' or 'test', got {self.split!r}")
        if not self.ks or min(self.ks) <= 0:
            raise ValueError(f"eval.ks must be positive, got {self.ks}")
        if self.num_triggers <= 0:
            raise ValueError(f"eval.num_triggers must be positive, got {self.num_triggers}")

    @property
    def max_k(self) -> int:
        return max(self.ks)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "EvalConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown eval preset {name!r}; have {sorted(PRESETS)}")
        cfg = replace(cls(preset=name, **PRESETS[name]), **overrides)
        if overrides.keys() & PRESETS[name].keys():
            cfg = replace(cfg, preset="custom")
        cfg.validate()
        return cfg
