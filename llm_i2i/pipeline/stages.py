"""The pipeline's stages as plain functions over an `ArtifactStore` (no Ray here; `ray_jobs/` wires them).

prepare -> sft_generator -> sft_discriminator -> generate -> discriminate -> fuse -> train_i2i -> build_index
-> evaluate. Each stage reads its inputs' artifacts and writes one artifact; see `artifacts.py` for skip/resume.
The LLM work is delegated to `llm_i2i.llm` through `LLMOps`, so tests can swap in fakes.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from llm_i2i.config import result_config, to_dict
from llm_i2i.data import leave_one_out, load_dataset, read_canonical, save_dataset
from llm_i2i.data.sequences import Sequences
from llm_i2i.eval.discriminator import CALIBRATION_BINS, candidate_quality, roc_auc, scored_pairs_quality
from llm_i2i.eval.evaluate import evaluate_neighbors
from llm_i2i.i2i import make_backbone
from llm_i2i.i2i.base import Neighbors
from llm_i2i.index.store import write_index
from llm_i2i.io import write_json, write_parquet
from llm_i2i.llm.modeling import TEXT_INITS
from llm_i2i.llm.runners import Runners
from llm_i2i.pipeline.artifacts import Artifact, ArtifactStore, StageResult, fingerprint_path
from llm_i2i.pipeline.config import PipelineConfig
from llm_i2i.pipeline.cut import choose_between, choose_cuts
from llm_i2i.pipeline.fuse import PLAIN_YES, FuseConfig, Fused, fuse
from llm_i2i.progress import Progress, log

BASELINE, LLM_I2I = "no_aug", "llm_i2i"


# ---------------------------------------------------------------------------- LLM operations


@dataclass
class LLMOps:
    """The LLM calls the pipeline makes; `real_llm_ops(runners)` binds them to `llm_i2i.llm`."""

    sft: Callable[[dict[str, Any], Path, Path, str | None], Path]  # (config, dataset_dir, out_dir, shared_uri) -> ckpt
    generate: Callable[[dict[str, Any], Path, Path, Path], dict]  # (config, ckpt, dataset_dir, out_path) -> stats
    discriminate: Callable[[dict[str, Any], Path, Path, Path, Path], dict]  # (+ pairs_path) -> stats
    evaluate_generator: Callable[[Path, Path, Any, dict[str, Any]], dict]  # (ckpt, dataset_dir, eval_cfg, gen cfg)
    # (ckpt, dataset_dir, max_users) -> {"random" | "hard": {"labels", "scores"}}: P(Yes) of test-split positives
    # and negatives (`llm_i2i.llm.sft_metrics.discriminator_scores`)
    discriminator_scores: Callable[[Path, Path, Any], dict[str, dict[str, np.ndarray]]]


def real_llm_ops(runners: Runners) -> LLMOps:
    """The `llm_i2i.llm` calls, running their heavy work on `runners` (the caller's: Ray ones from `ray_jobs`):
    generate/discriminate on `runners.batch_inference`; SFT and the evaluations that load a model on
    `runners.sft` (an `llm_i2i.llm.sft.SFTRunner`; None: this process)."""
    from llm_i2i.llm.sft import LocalRunner

    runner = runners.sft or LocalRunner()

    def sft(cfg: dict[str, Any], dataset_dir: Path, out_dir: Path, shared_uri: str | None) -> Path:
        from llm_i2i.config import from_dict
        from llm_i2i.llm.sft import SFTConfig, run_sft

        ckpt = run_sft(from_dict(SFTConfig, cfg), dataset_dir, out_dir, runner, shared_uri)
        if ckpt is None:
            raise RuntimeError(f"SFT stopped early (stop_after_steps); its resume state is in {out_dir}: run again")
        return Path(ckpt)

    def generate(cfg, ckpt, dataset_dir, out_path):
        from llm_i2i.config import from_dict
        from llm_i2i.llm.generate import GenerateConfig, run_generate

        return run_generate(from_dict(GenerateConfig, cfg), ckpt, dataset_dir, out_path, runners.batch_inference)

    def discriminate(cfg, ckpt, dataset_dir, pairs_path, out_path):
        from llm_i2i.config import from_dict
        from llm_i2i.llm.discriminate import DiscriminateConfig, run_discriminate

        return run_discriminate(from_dict(DiscriminateConfig, cfg), ckpt, dataset_dir, pairs_path, out_path,
                                runners.batch_inference)

    def evaluate_generator(ckpt, dataset_dir, eval_cfg, gen_cfg):
        from llm_i2i.llm.sft import evaluate_generator as ev

        kw = {k: gen_cfg[k] for k in ("history_len", "exclude_history", "max_users") if gen_cfg.get(k) is not None}
        return runner.call(ev, ckpt, dataset_dir, eval_cfg, **kw)

    def discriminator_scores(ckpt, dataset_dir, max_users):
        from llm_i2i.llm.sft_metrics import discriminator_scores as scores

        return runner.call(scores, ckpt, dataset_dir, split="test", max_users=max_users)

    return LLMOps(sft, generate, discriminate, evaluate_generator, discriminator_scores)


# ---------------------------------------------------------------------------- helpers


def dataset_dir(art: Artifact) -> Path:
    return art.path / "dataset"


def checkpoint_of(art: Artifact) -> Path:
    info = json.loads((art.path / "checkpoint.json").read_text())
    p = Path(info["path"])
    return p if p.is_absolute() else art.path / p


def _split_of(ds_dir: Path):
    return leave_one_out(read_canonical(ds_dir).sequences())


def _split(art: Artifact):
    return _split_of(dataset_dir(art))


def _count_rows(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


# ---------------------------------------------------------------------------- stages


def prepare(store: ArtifactStore, cfg: PipelineConfig) -> StageResult:
    """Load the user's data (or the embedded default), validate it, write the canonical dataset."""
    default = str(cfg.data) in ("default", "synthetic")
    external = {"data": "default" if default else fingerprint_path(cfg.data)}
    synthetic = to_dict(cfg.synthetic) if default else {}
    config = {"data": str(cfg.data) if default else str(Path(cfg.data).resolve()), "synthetic": synthetic}

    def run(out: Path) -> dict[str, Any]:
        ds = load_dataset(cfg.data, **synthetic)
        save_dataset(ds, out / "dataset")
        split = leave_one_out(ds.sequences())
        return {"dataset": ds.name, "split": split.report(), "data_report": ds.report, "rows": ds.interactions.num_rows}

    return store.run_stage("prepare", config, {}, run, external)


def sft(store: ArtifactStore, cfg: PipelineConfig, role: str, data: Artifact, ops: LLMOps,
        name: str | None = None, init_from: Artifact | None = None) -> StageResult:
    """Fine-tune the generator or discriminator (from `init_from`'s checkpoint if given), or register an
    existing checkpoint (`<role>_checkpoint`)."""
    name = name or f"sft_{role}"
    reuse = cfg.generator_checkpoint if role == "generator" else cfg.discriminator_checkpoint
    if reuse:
        ckpt = Path(reuse).resolve()
        if not ckpt.exists():
            raise FileNotFoundError(f"{role}_checkpoint: {ckpt} does not exist")
        content = fingerprint_path(ckpt)

        def register(out: Path) -> dict[str, Any]:
            # the content hash goes into the artifact, so an edited checkpoint changes this stage's output_hash
            # and every stage downstream re-runs
            write_json({"path": str(ckpt), "reused": True, "content_hash": content}, out / "checkpoint.json")
            m = ckpt / "llm_i2i_manifest.json"
            return {"reused": str(ckpt), "sft_manifest": json.loads(m.read_text()) if m.exists() else None}

        return store.run_stage(name, {"reuse": str(ckpt)}, {}, register, {"checkpoint": content})

    resolved = (cfg.sft_generator if role == "generator" else cfg.sft_discriminator).resolved()
    run_cfg, sft_cfg = to_dict(resolved), result_config(resolved)  # what the run gets; what keys the stage
    inputs = {"prepare": data}
    external: dict[str, str] = {}
    if init_from is not None:
        # the stage hash sees the base checkpoint through its content hash (an input), not its path, so a moved
        # output dir is still recognised as finished
        sft_cfg["model"] = {**sft_cfg.get("model", {}), "base_model": "<init_from>"}
        run_cfg["model"] = {**run_cfg["model"], "base_model": str(checkpoint_of(init_from))}
        inputs["init_from"] = init_from
    elif sft_cfg.get("model", {}).get("base_model"):  # a pretrained checkpoint on disk: keyed by its content
        external["base_model"] = fingerprint_path(sft_cfg["model"]["base_model"])
    if sft_cfg["model"]["item_init"] in TEXT_INITS and Path(sft_cfg["model"]["item_text_base"]).exists():
        external["item_text_base"] = fingerprint_path(sft_cfg["model"]["item_text_base"])
    # outside the atomic dir so an interrupted SFT resumes from its checkpoints; keyed by the config and the content
    # hashes of the data and base checkpoint, so new data never resumes (or reuses the finished model of) an old run
    key = store.stage_key(sft_cfg, inputs, external)
    work = store.work_dir(name, key)

    def train(out: Path) -> dict[str, Any]:
        ckpt = ops.sft(run_cfg, dataset_dir(data), work, store.work_uri(name, key))
        # copied, not moved: if this process dies before the manifest lands, the rerun finds the finished
        # checkpoint in `work` (run_sft skips a run whose manifest matches its config)
        shutil.copytree(ckpt, out / "model")
        write_json({"path": "model", "reused": False}, out / "checkpoint.json")
        m = out / "model" / "llm_i2i_manifest.json"
        return {"sft_manifest": json.loads(m.read_text()) if m.exists() else None}

    result = store.run_stage(name, sft_cfg, inputs, train, external)
    store.prune_work_dirs(name, keep=work)
    return result


def generate(store: ArtifactStore, cfg: PipelineConfig, data: Artifact, gen: Artifact, ops: LLMOps,
             name: str = "generate") -> StageResult:
    """Synthetic candidates: top-N items per user from the generator, given the user's recent history."""

    def run(out: Path) -> dict[str, Any]:
        stats = ops.generate(to_dict(cfg.generate), checkpoint_of(gen), dataset_dir(data), out / "candidates.parquet")
        return {**(stats or {}), "rows": _count_rows(out / "candidates.parquet")}

    return store.run_stage(name, result_config(cfg.generate), {"prepare": data, "sft_generator": gen}, run)


def real_train_pairs(ds_dir: Path) -> pa.Table:
    """The real training interactions (each user's items[:-2] by time) as (user_id, item_id, timestamp)."""
    inter = read_canonical(ds_dir).interactions
    users = inter.column("user_id").to_numpy()
    ts = inter.column("timestamp").to_numpy()
    order = np.lexsort((np.arange(len(users)), ts, users))
    u = users[order]
    starts = np.searchsorted(u, u, side="left")
    ends = np.searchsorted(u, u, side="right")
    keep = order[(np.arange(len(u)) - starts) < (ends - starts - 2)]
    return inter.take(np.sort(keep)).select(["user_id", "item_id", "timestamp"])


def discriminate(store: ArtifactStore, cfg: PipelineConfig, data: Artifact, disc: Artifact, cands: Artifact,
                 ops: LLMOps, name: str = "discriminate", score_real: bool | None = None) -> StageResult:
    """P(Yes) for every synthetic candidate (and, for the "w/o generator" ablation, every real training pair)."""
    score_real = cfg.score_real if score_real is None else score_real
    config = {**result_config(cfg.discriminate), "score_real": score_real}

    def run(out: Path) -> dict[str, Any]:
        ckpt = checkpoint_of(disc)
        stats = {"synthetic": ops.discriminate(to_dict(cfg.discriminate), ckpt, dataset_dir(data),
                                               cands.path / "candidates.parquet", out / "scored.parquet")}
        if score_real:
            pairs = out / "real_pairs.parquet"
            write_parquet(real_train_pairs(dataset_dir(data)), pairs)
            stats["real"] = ops.discriminate(to_dict(cfg.discriminate), ckpt, dataset_dir(data), pairs,
                                             out / "real_scored.parquet")
            pairs.unlink()
        return stats

    return store.run_stage(name, config, {"prepare": data, "sft_discriminator": disc, "generate": cands}, run)


def fuse_variants(cfg: PipelineConfig) -> dict[str, tuple[FuseConfig, str]]:
    """Every training set the evaluation needs: name -> (fuse config, which scored candidates to use).
    Variants that follow the main cut keep `fuse.threshold` as is; with `auto` the fuse stage resolves them."""
    f = cfg.fuse
    out = {BASELINE: (FuseConfig(add_synthetic=False), "main"), LLM_I2I: (f, "main")}
    if cfg.ablations:
        out["wo_discriminator"] = (replace(f, use_discriminator=False), "main")
        out["wo_threshold"] = (replace(f, threshold=PLAIN_YES), "main")
        if cfg.score_real:
            out["wo_generator"] = (replace(f, add_synthetic=False, filter_real=True), "main")
        if cfg.wo_longtail_loss:
            out["wo_longtail_loss"] = (f, "alpha1")
    for n in cfg.recall_numbers:
        out[f"recall_number={n}"] = (replace(f, max_rank=int(n)), "main")
    for c in cfg.confidence_levels:
        out[f"confidence={c:g}"] = (replace(f, threshold=float(c)), "main")
    return out


def _save_fused(fused: Fused, out: Path) -> None:
    out.mkdir(parents=True)
    s = fused.sequences
    write_parquet(fused.to_table(), out / "interactions.parquet")
    for key, arr in (("user_ids", s.user_ids), ("indptr", s.indptr), ("items", s.items),
                     ("item_ids", s.item_ids), ("n_real", fused.n_real)):
        np.save(out / f"{key}.npy", np.ascontiguousarray(arr), allow_pickle=False)
    write_json(fused.report, out / "report.json")


def load_fused(variant_dir: Path) -> tuple[Sequences, np.ndarray]:
    """A fused variant's sequences and its `n_real` (real items per user; the rest are synthetic)."""
    a = {k: np.load(variant_dir / f"{k}.npy", allow_pickle=False)
         for k in ("user_ids", "indptr", "items", "item_ids", "n_real")}
    return Sequences(a["user_ids"], a["indptr"], a["items"], a["item_ids"]), a["n_real"]


def own_variant(backbone: str) -> str:
    """The LLM-I2I training set of a backbone whose own auto cut differs from the first backbone's."""
    return f"{LLM_I2I}@{backbone}"


def fuse_stage(store: ArtifactStore, cfg: PipelineConfig, data: Artifact, scored: dict[str, Artifact]) -> StageResult:
    """Build every variant's training data from the train split + scored candidates (see `fuse.py`). With the
    `auto` cut, the first backbone and `fuse.auto_curve_backbones` each get their own cut on the whole curve (a
    backbone whose cut differs from the first's gets its own variant, `own_variant`); the others are decided by
    `train_i2i` from the fits it makes anyway."""
    variants = fuse_variants(cfg)
    config = {"variants": {k: {**to_dict(v), "source": s} for k, (v, s) in variants.items()}}
    curve = [b for b in cfg.backbones if b == cfg.backbones[0] or b in cfg.fuse.auto_curve_backbones]
    if cfg.fuse.needs_cut:  # what the auto cuts are chosen with
        config["auto_cut"] = {"backbones": {b: cfg.i2i.get(b, {}) for b in curve},
                              "eval": to_dict(cfg.eval_config(split="valid"))}

    def run(out: Path) -> dict[str, Any]:
        split = _split(data)
        train = split.train
        tables = {k: pq.read_table(a.path / "scored.parquet") for k, a in scored.items()}
        real = scored["main"].path / "real_scored.parquet"
        real_scores = pq.read_table(real) if real.exists() else None
        if cfg.fuse.needs_cut:
            cuts = choose_cuts(split, tables["main"], cfg.fuse, {b: cfg.i2i.get(b, {}) for b in curve},
                               cfg.eval_config(split="valid"))
        else:
            cuts = {b: {"mode": "fixed", "cut": cfg.fuse.threshold, "keep_none": False} for b in cfg.backbones}
        cut = cuts[cfg.backbones[0]]
        log.info(f"[fuse] confidence cut: {'keep none' if cut['keep_none'] else cut['cut']} ({cut['mode']})")
        own = {own_variant(b): (cfg.fuse, "main", c["cut"]) for b, c in cuts.items()
               if c["cut"] != cut["cut"]}
        reports = {}
        for name, (fcfg, source, chosen) in {**{k: (*v, cut["cut"]) for k, v in variants.items()}, **own}.items():
            fcfg = fcfg.resolve(chosen)
            fused = fuse(train, tables.get(source), fcfg, real_scores if fcfg.filter_real else None)
            _save_fused(fused, out / "variants" / _safe(name))
            reports[name] = fused.report
            log.info(f"[fuse] {name}: kept {fused.report['synthetic']['kept']} synthetic, "
                     f"{fused.report['real']['kept']} real")
        # the main augmented dataset, canonical (what `llm-i2i index --interactions` or other tools can read)
        main = out / "variants" / _safe(LLM_I2I)
        ds = read_canonical(dataset_dir(data))
        save_dataset(type(ds)(ds.name + "+llm_i2i", pq.read_table(main / "interactions.parquet"), ds.items,
                              {"fuse": reports[LLM_I2I]}), out / "dataset")
        return {"variants": reports, "cut": cut, "cuts": cuts}

    return store.run_stage("fuse", config, {"prepare": data, **{f"scored_{k}": a for k, a in scored.items()}}, run)


def _safe(name: str) -> str:
    return name.replace("=", "_")


def fit_plan(cfg: PipelineConfig) -> list[tuple[str, str]]:
    """(backbone, variant) pairs to fit: every backbone with and without augmentation; all variants on the first."""
    first = cfg.backbones[0]
    plan = [(first, v) for v in fuse_variants(cfg)]
    plan += [(b, v) for b in cfg.backbones[1:] for v in (BASELINE, LLM_I2I)]
    return plan


def fit_one(backbone: str, overrides: dict[str, Any], variant_dir: str, valid_targets: np.ndarray) -> dict[str, Any]:
    """Fit one backbone on one fused training set; returns the neighbour arrays and timing (Ray-task friendly)."""
    train, n_real = load_fused(Path(variant_dir))
    model = make_backbone(backbone, None, overrides)
    t0 = time.perf_counter()
    nb = model.fit(train, valid_targets, n_real)
    return {"indptr": nb.indptr, "neighbors": nb.neighbors, "scores": nb.scores, "item_ids": nb.item_ids,
            "seconds": time.perf_counter() - t0, "config": to_dict(model.config),
            "fit_report": getattr(model, "report", {})}


MapFn = Callable[[Callable[..., Any], Iterable[tuple]], list]


def serial_map(fn: Callable[..., Any], args: Iterable[tuple]) -> list:
    return [fn(*a) for a in args]


def train_i2i(store: ArtifactStore, cfg: PipelineConfig, data: Artifact, fused: Artifact,
              map_fn: MapFn = serial_map) -> StageResult:
    """Fit the I2I backbones on the fused variants; `map_fn` may run the fits in parallel (Ray tasks). Each
    backbone's LLM-I2I fit uses its own cut's data (`own_variant`). With the `auto` cut, a backbone the fuse stage
    did not choose for (not in `fuse.auto_curve_backbones`) keeps its LLM-I2I fit only if it beats its no-aug fit
    on validation (`cut.choose_between`); otherwise its LLM-I2I neighbours are the no-aug ones ("keep none")."""
    plan = fit_plan(cfg)
    config = {"plan": plan, "i2i": {b: cfg.i2i.get(b, {}) for b in cfg.backbones},
              "choose_on": {"eval": to_dict(cfg.eval_config(split="valid")), "min_gain_z": cfg.fuse.auto_min_gain_z}
              if cfg.fuse.needs_cut else None}
    fuse_stats = fused.manifest["stats"]

    def variant_of(b: str, v: str) -> str:
        return own_variant(b) if v == LLM_I2I and own_variant(b) in fuse_stats["variants"] else v

    def run(out: Path) -> dict[str, Any]:
        split = _split(data)
        valid = split.targets("valid")
        args = [(b, cfg.i2i.get(b, {}), str(fused.path / "variants" / _safe(variant_of(b, v))), valid) for b, v in plan]
        log.info(f"[train_i2i] {len(plan)} fits: {plan}")
        results = map_fn(fit_one, args)
        nbs = {(b, v): Neighbors(r["indptr"], r["neighbors"], r["scores"], r["item_ids"])
               for (b, v), r in zip(plan, results)}
        cuts = dict(fuse_stats["cuts"])
        first = cuts[cfg.backbones[0]]
        for b in cfg.backbones:
            if b in cuts:
                continue
            cuts[b] = choose_between(split, nbs[(b, BASELINE)], nbs[(b, LLM_I2I)], first["cut"],
                                     fuse_stats["variants"][LLM_I2I]["synthetic"]["kept"], b,
                                     cfg.fuse.auto_min_gain_z, cfg.eval_config(split="valid"))
            if cuts[b]["keep_none"]:
                nbs[(b, LLM_I2I)] = nbs[(b, BASELINE)]
            log.info(f"[train_i2i] {b}: {'keep none' if cuts[b]['keep_none'] else cuts[b]['cut']} on validation "
                     f"(z {cuts[b]['curve'][1]['z']:+.2f} against keep none)")
        fits = {}
        for (b, v), r in zip(plan, results):
            nb = nbs[(b, v)]
            write_parquet(nb.to_table(), out / b / _safe(v) / "neighbors.parquet")
            data_used = BASELINE if nb is nbs[(b, BASELINE)] else variant_of(b, v)
            fits[f"{b}/{v}"] = {"seconds": r["seconds"], "config": r["config"], "fit_report": r["fit_report"],
                                "rows": int(nb.indptr[-1]), "data": data_used}
        write_json(fits, out / "fits.json")
        return {"fits": fits, "cuts": cuts}

    return store.run_stage("train_i2i", config, {"prepare": data, "fuse": fused}, run)


def read_fit(art: Artifact, backbone: str, variant: str, item_ids: np.ndarray) -> Neighbors:
    return Neighbors.from_table(pq.read_table(art.path / backbone / _safe(variant) / "neighbors.parquet"), item_ids)


def build_index(store: ArtifactStore, cfg: PipelineConfig, data: Artifact, fits: Artifact) -> StageResult:
    """The served index: `index_backbone` fitted on the LLM-I2I data (readable by `llm_i2i.index.store`)."""

    def run(out: Path) -> dict[str, Any]:
        item_ids = read_canonical(dataset_dir(data)).items.column("item_id").to_numpy()
        nb = read_fit(fits, cfg.index_backbone, LLM_I2I, np.sort(item_ids))
        info = json.loads((fits.path / "fits.json").read_text())[f"{cfg.index_backbone}/{LLM_I2I}"]
        write_index(nb, out / "index", {"backbone": cfg.index_backbone, "variant": LLM_I2I,
                                        "backbone_config": info["config"], "dataset": data.manifest["stats"]["dataset"]})
        return {"rows": int(nb.indptr[-1]), "items": nb.n_items}

    return store.run_stage("build_index", {"backbone": cfg.index_backbone}, {"train_i2i": fits}, run)


def evaluate(store: ArtifactStore, cfg: PipelineConfig, data: Artifact, fits: Artifact, gen: Artifact | None,
             disc: Artifact | None, ops: LLMOps, fused: Artifact, scored: Artifact) -> StageResult:
    """Metrics of every fit on the test split (protocol `eval_preset`), the generator alone, and how good the
    discriminator is (`discriminator_quality`: AUCs, calibration, precision of the synthetic pairs)."""
    eval_cfg = cfg.eval_config()
    config = {"eval": to_dict(eval_cfg), "plan": fit_plan(cfg), "generator_alone": cfg.generator_alone,
              "llm_eval_max_users": cfg.llm_eval_max_users, "discriminator_auc": cfg.discriminator_auc,
              "generate": result_config(cfg.generate), "calibration_bins": CALIBRATION_BINS}
    inputs = {"prepare": data, "train_i2i": fits, "fuse": fused, "discriminate": scored}
    if gen is not None:
        inputs["sft_generator"] = gen
    if disc is not None:
        inputs["sft_discriminator"] = disc

    def run(out: Path) -> dict[str, Any]:
        split = _split(data)
        results: dict[str, Any] = {"fits": {}}
        prog = Progress(len(fit_plan(cfg)), "evaluate", "fits", every_s=10)
        for b, v in fit_plan(cfg):
            nb = read_fit(fits, b, v, split.full.item_ids)
            results["fits"][f"{b}/{v}"] = evaluate_neighbors(nb, split, eval_cfg)
            prog.update()
        prog.close()
        if cfg.generator_alone and gen is not None:
            gen_cfg = {**to_dict(cfg.generate), "max_users": cfg.llm_eval_max_users}
            t0 = time.perf_counter()
            results["generator_alone"] = ops.evaluate_generator(checkpoint_of(gen), dataset_dir(data), eval_cfg, gen_cfg)
            results["generator_alone_seconds"] = time.perf_counter() - t0
        pairs = None
        if cfg.discriminator_auc and disc is not None:
            pairs = ops.discriminator_scores(checkpoint_of(disc), dataset_dir(data), cfg.llm_eval_max_users)
            results["discriminator_auc"] = roc_auc(pairs["random"]["labels"], pairs["random"]["scores"])
        results["discriminator"] = discriminator_quality(cfg, split, pairs, scored, fused)
        results["protocol"] = to_dict(eval_cfg)
        write_json(results, out / "metrics.json")
        return {"fits": len(results["fits"])}

    return store.run_stage("evaluate", config, inputs, run)


def discriminator_quality(cfg: PipelineConfig, split, pairs: dict[str, dict] | None, scored: Artifact,
                          fused: Artifact) -> dict[str, Any]:
    """The discriminator judged on the test split: AUC against random and Swing-hard negatives (`pairs`, scored by
    `LLMOps.discriminator_scores`; absent when `discriminator_auc` is off), AUC and calibration on the generator's
    own scored candidates, and the precision of all generated vs kept synthetic pairs (no re-scoring here)."""
    kept = {key: pq.read_table(path) for key, name in (("without_discriminator", "wo_discriminator"), ("kept", LLM_I2I))
            if (path := fused.path / "variants" / _safe(name) / "interactions.parquet").exists()}
    cand = candidate_quality(split, pq.read_table(scored.path / "scored.parquet"), kept)
    auc, calibration, counts = {}, {}, {}
    for kind, s in (pairs or {}).items():
        q = scored_pairs_quality(s["labels"], s["scores"])
        auc[kind], counts[kind] = q["auc"], q["pairs"]
        calibration[f"{kind}_negatives"] = q["calibration"]
    auc.update(candidates_test=cand["auc"]["test"], candidates_valid=cand["auc"]["valid"],
               generator_rank_test=cand["generator_rank_auc_test"])
    calibration["candidates_test"] = cand["calibration"]
    cut = fused.manifest["stats"]["cut"]
    prec = cand["precision"]
    kept_test, all_test = prec.get("kept", {}).get("test"), prec["generated"]["test"]
    ratio = kept_test / all_test if kept_test is not None and all_test else None
    return {
        "split": "test", "max_users": cfg.llm_eval_max_users, "auc": auc,
        "pairs": {**counts, "candidates": cand["counts"]},
        "kept_precision": {**prec, "kept_over_generated_test": ratio, "generate_split": cfg.generate.split,
                           "cut": {k: cut[k] for k in ("mode", "cut", "keep_none")}},
        "calibration": {"bins": CALIBRATION_BINS, **calibration},
    }
