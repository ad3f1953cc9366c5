"""A plain per-step progress log with rate and ETA (works in CI logs, Ray workers and terminals)."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("llm_i2i")


def setup_logging(level: int = logging.INFO) -> None:
    if not log.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        log.addHandler(h)
    log.setLevel(level)


class Progress:
    """Log `done/total`, rate and ETA at most every `every_s` seconds."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", every_s: float = 5.0):
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.done = 0
        self.t0 = self.last = time.monotonic()

    def update(self, n: int = 1, **extra: float) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every_s or (self.total is not None and self.done >= self.total):
            self.last = now
            self._emit(now, extra)

    def _emit(self, now: float, extra: dict[str, float]) -> None:
        elapsed = max(now - self.t0, 1e-9)
        rate = self.done / elapsed
        parts = [f"{self.desc}: {self.done}" + (f"/{self.total}" if self.total else "")]
        parts.append(f"{rate:,.1f} {self.unit}/s")
        if self.total and rate > 0:
            parts.append(f"ETA {max(self.total - self.done, 0) / rate:,.0f}s")
        parts += [f"{k}={v:.4g}" for k, v in extra.items()]
        log.info(" | ".join(parts))

    def close(self) -> float:
        elapsed = time.monotonic() - self.t0
        log.info(f"{self.desc}: done {self.done} {self.unit} in {elapsed:,.1f}s")
        return elapsed
