"""Everything tried for the discriminator, on one page: ROC-AUC and end-to-end share against training cost.

Issue 17 asks for a discriminator at ROC-AUC >= 0.85 against random negatives and a share (Swing R@10 of the full
method over the variant without the discriminator) of >= +5%. Where that is out of reach, it asks for the curve of
what was tried rather than one number. This page collects it from recorded results; nothing is trained or timed here:
- `--quality`: `benchmarks.llm_quality` records (discriminator SFT runs: validation ROC-AUC against random and
  Swing-hard negatives, SFT seconds, trained tokens);
- `--pipelines`: `benchmarks.pipeline_stages` records (whole runs: test ROC-AUC, the discriminator's share, the
  discriminator SFT stage's seconds);
- `--slice`: `benchmarks.disc_pretrained_slice` records (scratch vs pretrained base on the same slice of users);
- `--ceiling`: a `benchmarks.disc_content_features --runs` record: per dataset, the test ROC-AUC of every signal at
  hand combined (the MLP fit on validation), drawn as that dataset's ceiling.

    python -m benchmarks.disc_tried --quality benchmarks/results/llm_quality_amazon.json ... \\
        --pipelines benchmarks/results/beauty_noconfig.json --slice benchmarks/results/disc_pretrained_slice.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from benchmarks._common import RESULTS, provenance, run_record, write_result

AUC_TARGET, SHARE_TARGET = 0.85, 0.05
CEILING_COMBINATION = "every signal, the discriminator too"


def ceilings(record: dict[str, Any]) -> dict[str, float]:
    """Dataset -> test ROC-AUC of the MLP over every signal of that dataset's run (datasets without a run skipped)."""
    return {name: r["run"]["combined"][CEILING_COMBINATION]["mlp_test_auc"]
            for name, r in record["results"].items() if "run" in r}


def quality_points(record: dict[str, Any], source: str) -> list[dict[str, Any]]:
    """One point per discriminator run of an `llm_quality` record (runs without a random-negative AUC are
    generators or references)."""
    points = []
    for result in record["results"]:
        for name, run in result["runs"].items():
            if run.get("valid_auc_random") is None:
                continue
            cfg = run["config"]
            points.append({
                "source": source, "dataset": result["dataset"], "label": name, "split": "valid",
                "auc_random": run["valid_auc_random"], "auc_hard": run.get("valid_auc_hard"),
                "seconds": run["training"]["train_seconds"], "tokens": run["training"].get("tokens"),
                "what": (f"scratch, from the generator; {cfg.get('negatives', 'hard' if cfg.get('hard_negatives') else 'random')}"
                         f" negatives x{cfg['neg_ratio']}, {cfg['positions_per_user']} positive(s)/user, "
                         f"{run['training'].get('best_epoch')}/{cfg['epochs']} epoch(s)"
                         + (", titles" if cfg.get("titles") else "")),
            })
    return points


def pipeline_points(record: dict[str, Any], source: str) -> list[dict[str, Any]]:
    """One point per whole run of a `pipeline_stages` record that trained its discriminator."""
    points = []
    for label, run in record["runs"].items():
        stage = run["stages"].get("sft_discriminator")
        if stage is None or stage["reused"]:
            continue
        auc = run.get("discriminator") or {}
        swing = run["backbones"].get("swing")
        lift = swing["llm_i2i"] / swing["no_aug"] - 1 if swing else None
        points.append({
            "source": source, "dataset": run.get("dataset") or "Beauty", "label": label, "split": "test",
            "auc_random": run["discriminator_auc"], "auc_hard": auc.get("hard"), "seconds": stage["seconds"],
            "share": run.get("discriminator_share"), "kept": run["kept"], "generated": run["generated"],
            "lift": lift, "what": "whole pipeline run (sft_discriminator stage)"
            + (f"; Swing R@10 lift {lift:+.1%}" if lift is not None else "")
            + ("; trained checkpoints reused (no SFT in this run)" if stage["seconds"] < 1 else ""),
        })
    return points


def slice_points(record: dict[str, Any], source: str) -> list[dict[str, Any]]:
    return [{"source": source, "dataset": f"{record.get('dataset', 'Beauty')} slice of {record['users']:,} users",
             "label": name,
             "split": "valid (slice)", "auc_random": v["auc_random"], "auc_hard": v.get("auc_hard"),
             "seconds": v["train_seconds"], "tokens": v.get("tokens"), "what": v.get("what", name)}
            for name, v in record["variants"].items()]


def render(record: dict[str, Any], plot: str | None) -> str:
    pts = record["points"]
    out = ["# The discriminator: what was tried, ROC-AUC and end-to-end share against cost", "", provenance(record), "",
           f"Targets (issue 17): ROC-AUC >= {AUC_TARGET} against random negatives; share >= {SHARE_TARGET:+.0%}. "
           "`valid` AUCs are on held-out validation positives with one random (or Swing-hard) negative per user; "
           "`test` AUCs are the pipeline report's, on the test split. Seconds are the discriminator's SFT only, on "
           "2 shared CPU cores; slice points train on a slice of the users and are comparable only with each other.",
           ""]
    if plot:
        out += [f"![AUC and share against cost]({plot})", ""]
    out += ["| dataset | run | split | ROC-AUC random | ROC-AUC hard | SFT s | share | what | source |",
            "|---|---|---|---|---|---|---|---|---|"]
    for p in sorted(pts, key=lambda p: (p["dataset"], p["seconds"])):
        hard = f"{p['auc_hard']:.3f}" if p.get("auc_hard") is not None else "–"
        share = f"{p['share']:+.1%}" if p.get("share") is not None else "–"
        out.append(f"| {p['dataset']} | {p['label']} | {p['split']} | {p['auc_random']:.3f} | {hard} | "
                   f"{p['seconds']:,.0f} | {share} | {p['what']} | `{p['source']}` |")
    best = max(pts, key=lambda p: p["auc_random"])
    out += ["", f"Best ROC-AUC against random negatives: **{best['auc_random']:.3f}** ({best['dataset']}, "
            f"{best['label']}), {AUC_TARGET - best['auc_random']:.3f} short of the target."]
    if record.get("ceilings"):
        out.append("Ceiling of every signal at hand combined (generator, discriminator, popularity, Swing, text, "
                   "content; an MLP fit on validation, test ROC-AUC): "
                   + ", ".join(f"{d} {v:.3f}" for d, v in record["ceilings"].items()) + ".")
    shares = [p for p in pts if p.get("share") is not None]
    if shares:
        top = max(shares, key=lambda p: p["share"])
        lift = f"; the Swing R@10 lift of that run: {top['lift']:+.1%}" if top.get("lift") is not None else ""
        out.append(f"Largest measured share: **{top['share']:+.1%}** ({top['dataset']}, {top['label']}{lift}).")
    return "\n".join(out)


def draw(points: list[dict[str, Any]], path: Path, ceiling: dict[str, float] | None = None) -> None:
    """AUC and share against SFT seconds, one colour per dataset; only each dataset's best point is named (the
    table names them all), and a dataset's signal ceiling is a dotted line in its colour."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_auc, ax_share) = plt.subplots(1, 2, figsize=(11, 4.2))
    for n, dataset in enumerate(sorted({p["dataset"] for p in points})):
        mine, colour = [p for p in points if p["dataset"] == dataset], f"C{n}"  # one colour per dataset on both
        ax_auc.scatter([p["seconds"] for p in mine], [p["auc_random"] for p in mine], label=dataset, c=colour)
        top = max(mine, key=lambda p: p["auc_random"])
        ax_auc.annotate(top["label"], (top["seconds"], top["auc_random"]), fontsize=6, xytext=(3, 2),
                        textcoords="offset points")
        if (ceiling or {}).get(dataset) is not None:
            ax_auc.axhline(ceiling[dataset], ls=":", lw=1, c=colour,
                           label=f"{dataset}: every signal combined")
        shared = [p for p in mine if p.get("share") is not None]
        if shared:
            ax_share.scatter([p["seconds"] for p in shared], [100 * p["share"] for p in shared], label=dataset,
                             c=colour)
            top = max(shared, key=lambda p: p["share"])
            ax_share.annotate(top["label"], (top["seconds"], 100 * top["share"]), fontsize=6, xytext=(3, -8),
                              textcoords="offset points")
    ax_auc.axhline(AUC_TARGET, ls="--", c="grey", lw=1)
    ax_auc.set(xscale="log", xlabel="discriminator SFT seconds (2 CPU cores)", ylabel="ROC-AUC, random negatives",
               title="discriminator quality against cost")
    ax_share.axhline(100 * SHARE_TARGET, ls="--", c="grey", lw=1)
    ax_share.set(xscale="log", xlabel="discriminator SFT seconds", ylabel="Swing R@10, full over w/o disc., %",
                 title="end-to-end share against cost")
    for ax in (ax_auc, ax_share):
        if ax.collections:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quality", nargs="*", default=[], help="benchmarks.llm_quality JSON records")
    ap.add_argument("--pipelines", nargs="*", default=[], help="benchmarks.pipeline_stages JSON records")
    ap.add_argument("--slice", nargs="*", default=[], help="benchmarks.disc_pretrained_slice JSON records")
    ap.add_argument("--ceiling", help="a benchmarks.disc_content_features --runs JSON record")
    ap.add_argument("--out", default="disc_tried")
    args = ap.parse_args(argv)
    record = run_record("disc_tried", argv)
    points = []
    for paths, reader in ((args.quality, quality_points), (args.pipelines, pipeline_points), (args.slice, slice_points)):
        for path in paths:
            points += reader(json.loads(Path(path).read_text()), Path(path).name)
    if not points:
        ap.error("no discriminator runs in the given records")
    record["points"] = points
    record["ceilings"] = ceilings(json.loads(Path(args.ceiling).read_text())) if args.ceiling else {}
    stem = Path(args.out) if Path(args.out).parent != Path(".") else RESULTS / args.out  # as write_result places it
    draw(points, stem.with_name(stem.name + ".png"), record["ceilings"])
    write_result(stem, record, render(record, stem.name + ".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
