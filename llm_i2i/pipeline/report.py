"""report.json / report.md / PNG plots from the finished artifacts (schema: docs/report_schema.md)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from llm_i2i.io import atomic_path, write_json, write_text
from llm_i2i.pipeline.artifacts import ArtifactStore
from llm_i2i.pipeline.config import PipelineConfig
from llm_i2i.pipeline.stages import BASELINE, LLM_I2I, fuse_variants

REPORT_VERSION = 1
MAIN_K = 10


def _subset(m: dict[str, Any], ks: tuple[int, ...]) -> dict[str, Any]:
    out = {f"{name}@{k}": m[f"{name}@{k}"] for k in ks for name in ("recall", "ndcg")}
    for part in ("long_tail", "non_long_tail"):
        if part in m:
            out[part] = {**{f"{name}@{k}": m[part][f"{name}@{k}"] for k in ks for name in ("recall", "ndcg")},
                         "users": m[part].get("users")}
    return out


def _lift(new: float, old: float) -> float | None:
    return None if not old else (new - old) / old


def build_report(store: ArtifactStore, cfg: PipelineConfig, wall_seconds: float | None = None) -> dict[str, Any]:
    ev = json.loads((store.get("evaluate").path / "metrics.json").read_text())
    fuse_manifest = store.get("fuse").manifest["stats"]
    fuse_stats, cut = fuse_manifest["variants"], fuse_manifest["cut"]
    prep = store.get("prepare").manifest["stats"]
    ks = tuple(k for k in ev["protocol"]["ks"] if k <= 20) or tuple(ev["protocol"]["ks"][:2])
    fits = {key: _subset(m, ks) for key, m in ev["fits"].items()}

    backbones = {}
    for b in cfg.backbones:
        base, aug = fits[f"{b}/{BASELINE}"], fits[f"{b}/{LLM_I2I}"]
        lift = {key: _lift(aug[key], base[key]) for key in base if "@" in key}
        lift["long_tail_recall@10"] = _lift(aug["long_tail"]["recall@10"], base["long_tail"]["recall@10"]) \
            if "recall@10" in base.get("long_tail", {}) else None
        backbones[b] = {"baseline": base, "llm_i2i": aug, "lift": lift}

    first = cfg.backbones[0]
    variants = fuse_variants(cfg)
    ablations = {v: {**fits[f"{first}/{v}"], "fuse": fuse_stats[v]} for v in variants
                 if not v.startswith(("recall_number=", "confidence="))}
    if "generator_alone" in ev:
        ablations["wo_i2i"] = {**_subset(ev["generator_alone"], ks), "note": "generator alone as the recommender"}
    figures = {
        "recall_number": [{"N": int(v.split("=")[1]), **fits[f"{first}/{v}"],
                           "synthetic_kept": fuse_stats[v]["synthetic"]["kept"]}
                          for v in variants if v.startswith("recall_number=")],
        "confidence": [{"confidence": float(v.split("=")[1]), **fits[f"{first}/{v}"],
                        "synthetic_kept": fuse_stats[v]["synthetic"]["kept"]}
                       for v in variants if v.startswith("confidence=")],
    }
    stages = {}
    ran = {h["stage"]: h["status"] for h in store.history}
    for name in sorted({h["stage"] for h in store.history}, key=lambda s: [h["stage"] for h in store.history].index(s)):
        m = store.manifest(name) or {}
        stages[name] = {"status_this_run": ran.get(name), "seconds": m.get("seconds"),
                        "config_hash": m.get("config_hash"), "started_utc": m.get("started_utc")}
    syn = fuse_stats[LLM_I2I]["synthetic"]
    return {
        "report_version": REPORT_VERSION,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dataset": {"name": prep["dataset"], **prep["split"]},
        "protocol": ev["protocol"],
        "backbones": backbones,
        "generator_alone": _subset(ev["generator_alone"], ks) if "generator_alone" in ev else None,
        "discriminator_auc": ev.get("discriminator_auc"),
        "discriminator": ev.get("discriminator"),
        "synthetic_pairs": {"generated": syn.get("generated", 0), "kept": syn["kept"], "funnel": syn,
                            "threshold": None if cut["keep_none"] else cut["cut"], "cut": cut,
                            "cut_per_backbone": store.get("train_i2i").manifest["stats"]["cuts"],
                            "real": fuse_stats[LLM_I2I]["real"]},
        "ablations": ablations,
        "figures": figures,
        "stages": stages,
        "pipeline_seconds": sum(s["seconds"] or 0 for s in stages.values()),
        "wall_seconds_this_run": wall_seconds,
        "fit_seconds": {k: v["seconds"] for k, v in store.get("train_i2i").manifest["stats"]["fits"].items()},
    }


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.4f}"
    return str(x)


def _cut_label(cut: float | None) -> str:
    return "keep none" if cut is None else f"{cut:.4g}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:+.1f}%"


def summary_lines(r: dict[str, Any]) -> list[str]:
    """The three lines a reader needs first: the lift, the long tail, and what was kept at which cut (and why)."""
    k = MAIN_K
    first = next(iter(r["backbones"]))
    row = r["backbones"][first]
    base, aug = row["baseline"], row["llm_i2i"]
    sp = r["synthetic_pairs"]
    cut = sp["cut"]
    if cut["keep_none"]:
        best = max((c for c in cut["curve"] if c["cut"] is not None), key=lambda c: c[cut["objective"]], default=None)
        tried = f"the best cut reached {_fmt(best[cut['objective']])}" if best else "no candidate could be scored"
        kept = (f"No confidence cut helped on validation (Recall@{k} {_fmt(cut['keep_none_valid'][cut['objective']])} "
                f"with real data alone; {tried}), so none of the {sp['generated']} generated pairs was kept and "
                f"LLM-I2I equals the baseline here.")
    elif cut["mode"] == "auto":
        kept = (f"Synthetic pairs: {sp['generated']} generated, {sp['kept']} kept at confidence >= {cut['cut']:.4g}, "
                f"the cut chosen on VALIDATION Recall@{k} ({_fmt(cut['keep_none_valid'][cut['objective']])} -> "
                f"{_fmt(cut['valid'][cut['objective']])}; the test split is never used to choose).")
    else:
        kept = (f"Synthetic pairs: {sp['generated']} generated, {sp['kept']} kept at the fixed confidence cut "
                f">= {cut['cut']:.4g} (fuse.threshold).")
    return [
        f"**{first} Recall@{k}: {_fmt(base[f'recall@{k}'])} without augmentation -> {_fmt(aug[f'recall@{k}'])} with "
        f"LLM-I2I ({_pct(row['lift'][f'recall@{k}'])}).**",
        f"Long-tail Recall@{k} (users whose test item is in the bottom "
        f"{r['protocol']['long_tail_fraction']:.0%} by training count): {_fmt(base['long_tail'][f'recall@{k}'])} -> "
        f"{_fmt(aug['long_tail'][f'recall@{k}'])}.",
        kept,
    ]


def _share(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def discriminator_line(d: dict[str, Any]) -> str:
    """One line on how good the discriminator is: AUCs, all-generated vs kept precision, calibration error."""
    auc, prec, cal = d["auc"], d["kept_precision"], d["calibration"]
    gen, kept, cut = prec["generated"], prec.get("kept"), prec["cut"]
    if cut["keep_none"] or not kept:
        kept_txt = "none kept (the cut chose keep none)"
    else:
        kept_txt = f"{_share(kept['test'])} of {kept['pairs']} kept at P(Yes) >= {cut['cut']:.4g}"
        if prec["kept_over_generated_test"] is not None:
            kept_txt += f" (x{prec['kept_over_generated_test']:.2f})"
        kept_txt += f"; valid-or-test {_share(gen['valid_or_test'])} -> {_share(kept['valid_or_test'])}"
    ece = ", ".join(f"{name.replace('_', ' ')} {_fmt(cal[name]['ece'])}" for name in
                    ("random_negatives", "candidates_test") if name in cal)
    return (f"Discriminator on the {d['split']} split: ROC-AUC {_fmt(auc.get('random'))} vs random negatives, "
            f"{_fmt(auc.get('hard'))} vs Swing-hard negatives, {_fmt(auc['candidates_test'])} on the generator's own "
            f"candidates (label: the user's test item; the generator's own rank scores "
            f"{_fmt(auc['generator_rank_test'])}; {_fmt(auc['candidates_valid'])} for the validation item). "
            f"Synthetic pairs that are the user's test item: {_share(gen['test'])} of {gen['pairs']} generated -> "
            f"{kept_txt}. Expected calibration error: {ece}.")


def render_markdown(r: dict[str, Any]) -> str:
    k = MAIN_K
    p = r["protocol"]
    lines = [
        f"# LLM-I2I report: {r['dataset']['name']}",
        "",
        *(f"{line}  " for line in summary_lines(r)),
        "",
        "![backbones with and without LLM-I2I](plots/backbones.png)",
        "",
        f"{r['dataset']['users']} users, {r['dataset']['items']} items, {r['dataset']['interactions']} interactions. "
        f"Protocol: preset `{p['preset']}`, split `{p['split']}`, M={p['num_triggers']} trigger(s), merge `{p['merge']}`, "
        f"history masked: {p['mask_history']}; long tail = bottom {p['long_tail_fraction']:.0%} items by train count.",
        "",
        "Kept synthetic pairs are appended after each user's real training history in generator-rank order. "
        f"Discriminator AUC: {_fmt(r['discriminator_auc'])}.",
        "",
        *([discriminator_line(r["discriminator"]), "", "![discriminator calibration](plots/calibration.png)", ""]
          if r.get("discriminator") else []),
        "## Backbones: no augmentation vs LLM-I2I",
        "",
        f"| backbone | R@{k} no | R@{k} LLM-I2I | lift | N@{k} no | N@{k} LLM-I2I | lift | long-tail R@{k} no | long-tail R@{k} LLM-I2I |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for b, row in r["backbones"].items():
        bs, au, li = row["baseline"], row["llm_i2i"], row["lift"]
        lines.append(f"| {b} | {_fmt(bs[f'recall@{k}'])} | {_fmt(au[f'recall@{k}'])} | {_pct(li[f'recall@{k}'])} | "
                     f"{_fmt(bs[f'ndcg@{k}'])} | {_fmt(au[f'ndcg@{k}'])} | {_pct(li[f'ndcg@{k}'])} | "
                     f"{_fmt(bs['long_tail'][f'recall@{k}'])} | {_fmt(au['long_tail'][f'recall@{k}'])} |")
    if r["generator_alone"]:
        g = r["generator_alone"]
        lines += ["", f"Generator alone as recommender: R@{k} {_fmt(g[f'recall@{k}'])}, N@{k} {_fmt(g[f'ndcg@{k}'])}."]
    lines += ["", "## Ablations (first backbone)", "",
              f"| variant | synthetic kept | real kept | R@{k} | N@{k} | long-tail R@{k} | non-long-tail R@{k} |",
              "|---|---|---|---|---|---|---|"]
    for v, m in r["ablations"].items():
        f = m.get("fuse", {})
        lines.append(f"| {v} | {f.get('synthetic', {}).get('kept', '–')} | {f.get('real', {}).get('kept', '–')} | "
                     f"{_fmt(m[f'recall@{k}'])} | {_fmt(m[f'ndcg@{k}'])} | "
                     f"{_fmt(m.get('long_tail', {}).get(f'recall@{k}'))} | {_fmt(m.get('non_long_tail', {}).get(f'recall@{k}'))} |")
    cut = r["synthetic_pairs"]["cut"]
    if cut["mode"] == "auto":
        lines += ["", f"## Confidence cut, chosen on validation ({cut['backbone']})", "",
                  f"| cut | synthetic kept | valid R@{k} | valid N@{k} | valid long-tail R@{k} |", "|---|---|---|---|---|"]
        lines += [f"| {_cut_label(c['cut'])}{' (chosen)' if c['cut'] == cut['cut'] else ''} | {c['synthetic_kept']} | "
                  f"{_fmt(c['recall@10'])} | {_fmt(c['ndcg@10'])} | {_fmt(c['long_tail_recall@10'])} |"
                  for c in cut["curve"]]
    per = r["synthetic_pairs"]["cut_per_backbone"]
    if cut["mode"] == "auto":
        lines += ["", "## Each backbone's own cut (validation; keep none unless a cut wins by the sign test)", "",
                  f"| backbone | cuts tried | chosen | valid R@{k} keep none -> chosen | users gained / lost | z |",
                  "|---|---|---|---|---|---|"]
        tried = {"curve": "all", "keep_none_or_first": "keep none, the first backbone's"}
        lines += [f"| {b} | {tried[c['search']]} | "
                  f"{_cut_label(c['cut'])} | {_fmt(c['keep_none_valid']['recall@10'])} -> {_fmt(c['valid']['recall@10'])} | "
                  f"{c['valid']['gained']} / {c['valid']['lost']} | {c['valid']['z']:+.2f} |" for b, c in per.items()]
    for fig, key in (("recall_number", "N"), ("confidence", "confidence")):
        if r["figures"][fig]:
            lines += ["", f"## Recall@{k} vs {key}", "", f"| {key} | synthetic kept | R@{k} | N@{k} |", "|---|---|---|---|"]
            lines += [f"| {row[key]} | {row['synthetic_kept']} | {_fmt(row[f'recall@{k}'])} | {_fmt(row[f'ndcg@{k}'])} |"
                      for row in r["figures"][fig]]
    lines += ["", "## Stages", "", "| stage | this run | seconds (when it ran) | config hash |", "|---|---|---|---|"]
    lines += [f"| {n} | {s['status_this_run']} | {_fmt(s['seconds'])} | `{s['config_hash']}` |" for n, s in r["stages"].items()]
    lines += ["", f"Total stage time: {r['pipeline_seconds']:.1f}s. Plots: `plots/*.png`.", ""]
    return "\n".join(lines)


def plot_report(r: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    k = MAIN_K
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    names = list(r["backbones"])
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (title, get) in zip(axes, (
        (f"Recall@{k}", lambda m: m[f"recall@{k}"]),
        (f"NDCG@{k}", lambda m: m[f"ndcg@{k}"]),
        (f"long-tail Recall@{k}", lambda m: m["long_tail"][f"recall@{k}"]),
    )):
        x = np.arange(len(names))
        ax.bar(x - 0.2, [get(r["backbones"][b]["baseline"]) for b in names], 0.4, label="no augmentation")
        ax.bar(x + 0.2, [get(r["backbones"][b]["llm_i2i"]) for b in names], 0.4, label="LLM-I2I")
        ax.set_xticks(x, names)
        ax.set_title(title)
    axes[0].legend()
    fig.suptitle(f"{r['dataset']['name']}: backbones with and without LLM-I2I ({r['protocol']['preset']} protocol)")
    fig.tight_layout()
    paths.append(_save(fig, out_dir / "backbones.png"))
    curves = {b: c for b, c in r["synthetic_pairs"]["cut_per_backbone"].items() if c.get("search") == "curve"}
    if curves:  # one line per backbone scored on the whole curve, relative to its own "keep none"
        fig, ax = plt.subplots(figsize=(6, 3.8))
        for b, c in curves.items():
            none = c["keep_none_valid"]["recall@10"]
            rel = [(row["synthetic_kept"], 100 * (row["recall@10"] / none - 1) if none else 0.0) for row in c["curve"]]
            line, = ax.plot(*zip(*sorted(rel)), "o-", label=f"{b} (keep none R@{k} {none:.3f})")
            chosen = next(x for x, row in zip(rel, c["curve"]) if row["cut"] == c["cut"])
            ax.plot(*chosen, "*", ms=14, color=line.get_color())
        ax.axhline(0, color="grey", ls="--")
        ax.set_xlabel("synthetic pairs kept (0 = keep none)")
        ax.set_ylabel(f"VALIDATION Recall@{k} vs keep none (%)")
        ax.set_title(f"{r['dataset']['name']}: auto confidence cut per backbone (star = chosen)", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(_save(fig, out_dir / "cut.png"))
    if r.get("discriminator"):
        paths.append(_save(plot_calibration(r["discriminator"], r["dataset"]["name"]), out_dir / "calibration.png"))
    for fig_name, key, xlabel in (("recall_number", "N", "recall number N"), ("confidence", "confidence", "confidence level")):
        rows = r["figures"][fig_name]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.6))
        ax.plot([row[key] for row in rows], [row[f"recall@{k}"] for row in rows], "o-", label="LLM-I2I")
        base = r["backbones"][names[0]]["baseline"][f"recall@{k}"]
        ax.axhline(base, color="grey", ls="--", label="no augmentation")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"Recall@{k}")
        ax.set_title(f"{r['dataset']['name']} / {names[0]}")
        ax.legend()
        fig.tight_layout()
        paths.append(_save(fig, out_dir / f"{fig_name}.png"))
    return paths


CALIBRATION_SETS = {"random_negatives": "test positives vs random negatives",
                    "hard_negatives": "test positives vs Swing-hard negatives",
                    "candidates_test": "generator candidates (positive = test item)"}


def plot_calibration(d: dict[str, Any], dataset: str):
    """Reliability diagram (observed positive rate against mean P(Yes) per bin) and the pairs per bin."""
    import matplotlib.pyplot as plt

    fig, (ax, hist) = plt.subplots(1, 2, figsize=(11, 4))
    ax.plot([0, 1], [0, 1], color="grey", ls="--", label="perfectly calibrated")
    width = 1 / d["calibration"]["bins"] / (len(CALIBRATION_SETS) + 1)
    for i, (name, label) in enumerate(CALIBRATION_SETS.items()):
        table = d["calibration"].get(name)
        if table is None:
            continue
        rows = [b for b in table["bins"] if b["count"]]
        ax.plot([b["mean_confidence"] for b in rows], [b["positive_rate"] for b in rows], "o-",
                label=f"{label}: ECE {table['ece']:.3f}, AUC {_fmt(d['auc'].get(name.replace('_negatives', '')))}")
        hist.bar([b["lo"] + (i + 0.5) * width for b in table["bins"]], [b["count"] for b in table["bins"]], width,
                 label=label)
    ax.set_xlabel("mean P(Yes) in bin")
    ax.set_ylabel("observed positive rate")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    hist.set_yscale("log")
    hist.set_xlabel("P(Yes) bin")
    hist.set_ylabel("pairs")
    hist.legend(fontsize=7)
    fig.suptitle(f"{dataset}: discriminator calibration ({d['split']} split)")
    fig.tight_layout()
    return fig


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def write_report(store: ArtifactStore, cfg: PipelineConfig, wall_seconds: float | None = None) -> dict[str, Any]:
    """Write report.json, report.md and plots/ at the root of the output URI."""
    r = build_report(store, cfg, wall_seconds)
    if store.fs is None:
        root = Path(store.base)
        _write_all(r, root)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            _write_all(r, Path(tmp))
            import pyarrow.fs as pafs

            pafs.copy_files(tmp, store.base, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=store.fs)
    return r


def _write_all(r: dict[str, Any], root: Path) -> None:
    plots = plot_report(r, root / "plots")
    r["plots"] = [str(p.relative_to(root)) for p in plots]
    write_json(r, root / "report.json")
    write_text(render_markdown(r), root / "report.md")
