"""Run one stage (reading its inputs' finished artifacts from the store) or the whole chain, then the report."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Callable

from llm_i2i.pipeline import stages as st
from llm_i2i.pipeline.artifacts import ArtifactStore, StageResult
from llm_i2i.pipeline.config import STAGES, PipelineConfig
from llm_i2i.progress import log

ALPHA1 = "alpha1"  # the α=1 generator chain for the "w/o long-tail loss" ablation


def _alpha1_cfg(cfg: PipelineConfig) -> PipelineConfig:
    return replace(cfg, generator_checkpoint=cfg.alpha1_generator_checkpoint,
                   sft_generator=replace(cfg.sft_generator, alpha=1.0, beta=1.0))


def _sft_generator(store, cfg, ops, map_fn) -> StageResult:
    data = store.get("prepare")
    if cfg.wo_longtail_loss:
        st.sft(store, _alpha1_cfg(cfg), "generator", data, ops, name=f"sft_generator_{ALPHA1}")
    return st.sft(store, cfg, "generator", data, ops)


def _sft_discriminator(store, cfg, ops, map_fn) -> StageResult:
    init = store.get("sft_generator") if cfg.discriminator_from_generator else None
    return st.sft(store, cfg, "discriminator", store.get("prepare"), ops, init_from=init)


def _generate(store, cfg, ops, map_fn) -> StageResult:
    data = store.get("prepare")
    if cfg.wo_longtail_loss:
        st.generate(store, cfg, data, store.get(f"sft_generator_{ALPHA1}"), ops, name=f"generate_{ALPHA1}")
    return st.generate(store, cfg, data, store.get("sft_generator"), ops)


def _discriminate(store, cfg, ops, map_fn) -> StageResult:
    data, disc = store.get("prepare"), store.get("sft_discriminator")
    if cfg.wo_longtail_loss:
        st.discriminate(store, cfg, data, disc, store.get(f"generate_{ALPHA1}"), ops,
                        name=f"discriminate_{ALPHA1}", score_real=False)
    return st.discriminate(store, cfg, data, disc, store.get("generate"), ops)


def _fuse(store, cfg, ops, map_fn) -> StageResult:
    scored = {"main": store.get("discriminate")}
    if cfg.wo_longtail_loss:
        scored[ALPHA1] = store.get(f"discriminate_{ALPHA1}")
    return st.fuse_stage(store, cfg, store.get("prepare"), scored)


STAGE_FUNCS: dict[str, Callable[..., StageResult]] = {
    "prepare": lambda store, cfg, ops, map_fn: st.prepare(store, cfg),
    "sft_generator": _sft_generator,
    "sft_discriminator": _sft_discriminator,
    "generate": _generate,
    "discriminate": _discriminate,
    "fuse": _fuse,
    "train_i2i": lambda store, cfg, ops, map_fn: st.train_i2i(store, cfg, store.get("prepare"), store.get("fuse"), map_fn),
    "build_index": lambda store, cfg, ops, map_fn: st.build_index(store, cfg, store.get("prepare"), store.get("train_i2i")),
    "evaluate": lambda store, cfg, ops, map_fn: st.evaluate(
        store, cfg, store.get("prepare"), store.get("train_i2i"), store.get("sft_generator"),
        store.get("sft_discriminator"), ops, store.get("fuse"), store.get("discriminate")),
}
assert tuple(STAGE_FUNCS) == STAGES


def run_stage(name: str, cfg: PipelineConfig, out: str, ops: st.LLMOps, map_fn: st.MapFn = st.serial_map,
              store: ArtifactStore | None = None) -> StageResult:
    """Run one stage with the LLM calls `ops` (`real_llm_ops(runners)`); its inputs must be finished artifacts
    under `out`."""
    if name not in STAGE_FUNCS:
        raise ValueError(f"unknown stage {name!r}; stages: {STAGES}")
    store = store or ArtifactStore(out)
    with store.locked():
        return STAGE_FUNCS[name](store, cfg, ops, map_fn)


def run_pipeline(cfg: PipelineConfig, out: str, ops: st.LLMOps, map_fn: st.MapFn = st.serial_map,
                 until: str | None = None) -> dict[str, Any]:
    """Every stage in order (finished ones are skipped), then `report.json`/`report.md`/plots under `out`.

    Holds `out`'s lock throughout: a second run on the same `out` raises `OutDirInUse` at once."""
    from llm_i2i.pipeline.report import write_report

    store = ArtifactStore(out)
    with store.locked():
        t0 = time.perf_counter()
        for i, name in enumerate(STAGES, 1):
            log.info(f"=== stage {i}/{len(STAGES)}: {name}")
            run_stage(name, cfg, out, ops, map_fn, store)
            if name == until:
                return {"stopped_after": name, "history": store.history}
        report = write_report(store, cfg, wall_seconds=time.perf_counter() - t0)
    log.info(f"pipeline finished in {time.perf_counter() - t0:,.1f}s; report at {out}/report.md")
    return report
