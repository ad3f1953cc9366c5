"""Where a whole `llm-i2i run` spends its time, and what it reached: one page from finished runs' report.json.

Each run is named `label=DIR` (a finished `llm-i2i run --out DIR`). The page lists every stage's seconds (a
stage reused from an earlier run keeps the seconds it took when it ran, marked `reused`), their sum, and the
headline figures of the report: Swing and every backbone's test Recall@10 without and with LLM-I2I, long tail,
the cut, the discriminator's AUC and share, the generator's epochs and its R@10 alone. Nothing is timed here; the runs were (their commands go in `--note`).

    python -m benchmarks.pipeline_stages --run before=/tmp/bt/out --run after=/tmp/bt2/out --out beauty_noconfig
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from benchmarks._common import labelled_path, provenance, run_record, write_result


def generator_training(run_dir: Path) -> dict[str, Any] | None:
    """The generator's epochs (run, best, the lr schedule's length) from the run's own SFT checkpoint; None when
    the run reused a checkpoint from elsewhere."""
    path = run_dir / "sft_generator" / "model" / "llm_i2i_manifest.json"
    if not path.exists():
        return None
    m = json.loads(path.read_text())
    return {"epochs_run": len(m["training"]["history"]), "best_epoch": m["training"]["best_epoch"],
            "epochs": m["sft_config"]["epochs"]}


def summary(report: dict[str, Any], generator: dict[str, Any] | None = None) -> dict[str, Any]:
    stages = {name: {"seconds": s["seconds"], "reused": s["status_this_run"] != "ran"}
              for name, s in report["stages"].items()}
    backbones = {b: {"no_aug": v["baseline"]["recall@10"], "llm_i2i": v["llm_i2i"]["recall@10"],
                     "long_tail_no_aug": v["baseline"]["long_tail"]["recall@10"],
                     "long_tail_llm_i2i": v["llm_i2i"]["long_tail"]["recall@10"]}
                 for b, v in report["backbones"].items()}
    pairs = report["synthetic_pairs"]
    ablations = report.get("ablations") or {}
    share = (ablations["llm_i2i"]["recall@10"] / ablations["wo_discriminator"]["recall@10"] - 1
             if {"llm_i2i", "wo_discriminator"} <= set(ablations) else None)
    return {"discriminator_share": share, "dataset": report["dataset"].get("name"), "stages": stages, "stage_seconds": sum(s["seconds"] for s in stages.values()), "backbones": backbones,
            "generated": pairs["generated"], "kept": pairs["kept"], "cut": pairs["threshold"],
            "discriminator_auc": report.get("discriminator_auc"),
            "discriminator": (report.get("discriminator") or {}).get("auc"), "generator": generator,
            "generator_alone": ({"recall@10": ablations["wo_i2i"]["recall@10"],
                                 "long_tail_recall@10": ablations["wo_i2i"]["long_tail"]["recall@10"]}
                                if "wo_i2i" in ablations else None)}


def render(record: dict[str, Any]) -> str:
    runs = record["runs"]
    labels = list(runs)
    out = ["# Whole pipeline runs: stage times and headline figures", "", provenance(record), ""]
    if record.get("note"):
        out += [record["note"], ""]
    out += ["| stage | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for stage in runs[labels[0]]["stages"]:
        cells = []
        for label in labels:
            s = runs[label]["stages"].get(stage)
            cells.append("–" if s is None else f"{s['seconds']:,.1f}" + (" (reused)" if s["reused"] else ""))
        out.append(f"| {stage} | " + " | ".join(cells) + " |")
    out.append("| **sum, s (min)** | " + " | ".join(
        f"**{runs[lb]['stage_seconds']:,.0f} ({runs[lb]['stage_seconds'] / 60:.1f})**" for lb in labels) + " |")
    out += ["", "| figure | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for b in runs[labels[0]]["backbones"]:
        def lift(lb: str, b: str = b) -> str:
            v = runs[lb]["backbones"][b]
            return f"{v['no_aug']:.4f} -> {v['llm_i2i']:.4f} ({v['llm_i2i'] / v['no_aug'] - 1:+.1%})"
        out.append(f"| {b} R@10 | " + " | ".join(lift(lb) for lb in labels) + " |")
    out.append("| Swing long-tail R@10 | " + " | ".join(
        f"{runs[lb]['backbones']['swing']['long_tail_no_aug']:.4f} -> {runs[lb]['backbones']['swing']['long_tail_llm_i2i']:.4f}"
        for lb in labels) + " |")
    out.append("| synthetic kept / generated (cut) | " + " | ".join(
        f"{runs[lb]['kept']:,} / {runs[lb]['generated']:,} ({runs[lb]['cut']:.4g})" for lb in labels) + " |")
    out.append("| discriminator ROC-AUC, random negatives | " + " | ".join(
        f"{runs[lb]['discriminator_auc']:.4f}" if runs[lb]["discriminator_auc"] is not None else "–" for lb in labels)
        + " |")
    for key, what in (("hard", "Swing-hard negatives"), ("candidates_test", "the generator's candidates (test)")):
        out.append(f"| discriminator ROC-AUC, {what} | " + " | ".join(
            f"{runs[lb]['discriminator'][key]:.4f}" if (runs[lb].get("discriminator") or {}).get(key) is not None
            else "–" for lb in labels) + " |")
    out.append("| discriminator's share: Swing R@10, full / w/o discriminator | " + " | ".join(
        f"{runs[lb]['discriminator_share']:+.1%}" if runs[lb].get("discriminator_share") is not None else "–"
        for lb in labels) + " |")
    out.append("| generator: best epoch / epochs run / lr schedule (epochs) | " + " | ".join(
        "{best_epoch} / {epochs_run} / {epochs}".format(**runs[lb]["generator"]) if runs[lb].get("generator")
        else "– (reused)" for lb in labels) + " |")
    out.append("| generator alone: R@10 / long-tail R@10 | " + " | ".join(
        "{recall@10:.4f} / {long_tail_recall@10:.4f}".format(**runs[lb]["generator_alone"])
        if runs[lb].get("generator_alone") else "–" for lb in labels) + " |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="append", required=True, type=labelled_path,
                    help="label=DIR of a finished `llm-i2i run --out DIR`")
    ap.add_argument("--note", default="", help="how the runs were made (commands, machine state)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    record = run_record("pipeline_stages", argv)
    record["note"] = args.note
    record["runs"] = {}
    for label, directory in args.run:
        report = json.loads((Path(directory) / "report.json").read_text())
        record["runs"][label] = {"dir": directory, **summary(report, generator_training(Path(directory)))}
    write_result(args.out, record, render(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
