"""Quality of the two LLMs on real data (CPU, default small model), against Swing under the same protocol.

For each dataset: SFT the generator with alpha=4 (paper) and alpha=1 (ablation), and the discriminator
(initialised from the alpha=4 generator; `discriminator_hard` trains on Swing-hard negatives); then on the TEST split
  * the generator alone as a recommender: top-10 from the user's last <= 10 items (train+valid history),
    with and without excluding history items, overall and long-tail (bottom 20% by train popularity),
  * Swing, 'paper' preset (M=1 trigger, no masking) and the same with history masked,
and the discriminator's ROC-AUC on held-out validation positives vs random and vs Swing-hard negatives.

    python -m benchmarks.llm_quality --datasets Beauty Toys_and_Games
Results: benchmarks/results/<--tag>.{md,json} (after every run); checkpoints: out/llm/<Dataset>/<run>/ (a finished
run with the same config is reused, an interrupted one resumes). `--datasets synthetic` uses the embedded dataset.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks._common import DATA_ROOT, REPO, provenance, run_locked, run_record, write_result
from llm_i2i.config import load_config, to_dict
from llm_i2i.data import leave_one_out, load_dataset, save_dataset
from llm_i2i.eval.evaluate import evaluate_neighbors
from llm_i2i.eval.protocol import EvalConfig
from llm_i2i.i2i.swing import Swing
from llm_i2i.llm.modeling import load_checkpoint
from llm_i2i.llm.sft import SFTConfig, discriminator_auc, evaluate_generator, run_sft
from llm_i2i.progress import log, setup_logging


def _pick(m: dict) -> dict:
    return {"recall@10": m["recall@10"], "ndcg@10": m["ndcg@10"], "long_tail_recall@10": m["long_tail"]["recall@10"],
            "long_tail_ndcg@10": m["long_tail"]["ndcg@10"], "long_tail_users": m["long_tail"]["users"],
            "users": m["users_evaluated"]}


def run_dataset(name: str, data_root: Path, overrides: list[str], runs: list[str], res: dict, save,
                disc_overrides: list[str] = (), suffix: str = "") -> dict:
    canon = REPO / "out" / "data" / name
    if not (canon / "interactions.parquet").exists():
        save_dataset(load_dataset(None if name == "synthetic" else data_root / name), canon)  # 'synthetic': the embedded set
    out = REPO / "out" / "llm" / name
    res.update({"dataset": name, "runs": {}})
    split = leave_one_out(load_dataset(canon).sequences())
    test = EvalConfig.from_preset("paper", ks=(10,))
    t = time.perf_counter()
    nb = Swing().fit(split.train)
    res["swing_fit_seconds"] = time.perf_counter() - t
    res["swing_paper"] = _pick(evaluate_neighbors(nb, split, test))
    res["swing_paper_masked"] = _pick(evaluate_neighbors(nb, split, EvalConfig.from_preset("paper", ks=(10,), mask_history=True)))
    specs = {
        "generator_a4": (["role=generator", "alpha=4.0"], None),
        "generator_a1": (["role=generator", "alpha=1.0"], None),
        "discriminator": (["role=discriminator", "epochs=1"], "generator_a4"),
        "discriminator_hard": (["role=discriminator", "epochs=1", "negatives=hard"], "generator_a4"),
    }
    for run in runs:
        if run == "references":
            res["auc_references"] = reference_aucs(canon, out / "generator_a4",
                                                   out / "discriminator" if (out / "discriminator").exists() else None)
            save()
            log.info(f"{name}/references: {res['auc_references']}")
            continue
        sets, init_from = specs[run]
        extra = [f"model.base_model={out / init_from}"] if init_from else []
        if run.startswith("discriminator"):
            extra += list(disc_overrides)
        cfg = load_config(SFTConfig, None, [*overrides, *sets, *extra])  # the run's own settings win
        t = time.perf_counter()
        ckpt = run_sft(cfg, canon, out / f"{run}{suffix}")
        seconds = time.perf_counter() - t
        _, _, manifest = load_checkpoint(ckpt)
        entry = {"checkpoint": str(ckpt), "sft_seconds_this_invocation": seconds, "config": to_dict(cfg),
                 "training": manifest["training"], "valid_metrics": manifest["metrics"]}
        if cfg.role == "generator":
            for excl in (True, False):
                m = evaluate_generator(ckpt, canon, test, history_len=10, exclude_history=excl)
                entry[f"test_exclude_history_{excl}"] = _pick(m)
        else:
            entry["valid_auc_random"] = discriminator_auc(ckpt, canon, "random")
            entry["valid_auc_hard"] = discriminator_auc(ckpt, canon, "hard")
        res["runs"][f"{run}{suffix}"] = entry
        save()
        log.info(f"{name}/{run}: {entry.get('test_exclude_history_True', entry.get('valid_auc_random'))}")
    return res


def reference_aucs(canon: Path, generator: Path, discriminator: Path | None = None) -> dict:
    """What the discriminator's ROC-AUC is measured against, on the same pairs (`auc_pairs`, validation split):
    the candidate's training popularity, Swing's fan-out merge score of the candidate from the same <= 10 history
    items (K=200, summed, 0 when no history item lists it), the alpha=4 generator's next-item logit for the
    candidate, and, given `discriminator`, that checkpoint's P(Yes)."""
    import numpy as np
    import torch

    from llm_i2i.i2i.swing import Swing
    from llm_i2i.llm.scoring import next_item_scores, yes_probability
    from llm_i2i.llm.sft_data import swing_neighbors
    from llm_i2i.llm.sft_metrics import auc_pairs, roc_auc
    from llm_i2i.llm.tokenizer import item_vocabulary

    split = leave_one_out(load_dataset(canon).sequences())
    counts = split.train.item_counts().astype(np.float64)
    dense = {int(e): d for d, e in enumerate(split.train.item_ids)}
    swing = Swing().fit(split.train)
    model, tok, _ = load_checkpoint(generator)
    col = {int(e): c for c, e in enumerate(item_vocabulary(tok)[0])}
    disc = load_checkpoint(discriminator)[:2] if discriminator else None

    def merge_score(hist: list[int], cand: int) -> float:
        c = dense[cand]
        total = 0.0
        for h in hist:
            ids, sc = swing.row(dense[h])
            total += float(sc[ids == c].sum())
        return total

    out = {}
    for neg in ("random", "hard"):
        hard = swing_neighbors(split.train) if neg == "hard" else None
        hist, cand, labels = auc_pairs(split, "valid", hard, 10, None, 0)
        pop = counts[[dense[c] for c in cand]]
        logits = np.empty(len(cand))
        for s in range(0, len(cand), 1024):  # each user's two rows share the history: score it once
            with torch.no_grad():
                sc = next_item_scores(model, tok, hist[s:s + 1024:2], max_history=10).float().numpy()
            rows = np.repeat(np.arange(sc.shape[0]), 2)
            logits[s:s + 2 * sc.shape[0]] = sc[rows, [col[c] for c in cand[s:s + 2 * sc.shape[0]]]]
        out[neg] = {"popularity": roc_auc(labels, pop),
                    "swing_merge": roc_auc(labels, np.array([merge_score(h, c) for h, c in zip(hist, cand)])),
                    "generator_logit": roc_auc(labels, logits)}
        if disc:
            out[neg]["discriminator"] = roc_auc(labels, yes_probability(*disc, hist, cand, max_history=10))
    return out


def to_markdown(all_res: list[dict], record: dict, seconds: float) -> str:
    lines = ["# LLM generator / discriminator quality (CPU, default small model)", "", provenance(record), "",
             f"Total {seconds:,.0f}s.", "",
             "Protocol: leave-one-out, TEST split, full ranking, Recall@10 = hit@10. Generator: top-10 from the user's "
             "last <= 10 items (items[:-1]); Swing: 'paper' preset (fitted on items[:-2], trigger = last item, M=1). "
             "Long-tail: test target in the bottom 20% of items by train popularity (literal definition).", ""]
    for r in all_res:
        lines += [f"## {r['dataset']}", "", "| model | history excluded | R@10 | N@10 | long-tail R@10 | long-tail N@10 |",
                  "|---|---|---|---|---|---|"]
        for key, excl in (("swing_paper", "no"), ("swing_paper_masked", "yes")):
            m = r[key]
            lines.append(f"| Swing (paper preset) | {excl} | {m['recall@10']:.4f} | {m['ndcg@10']:.4f} | "
                         f"{m['long_tail_recall@10']:.4f} | {m['long_tail_ndcg@10']:.4f} |")
        for run, e in r["runs"].items():
            if not run.startswith("generator"):
                continue
            for excl in (True, False):
                m = e[f"test_exclude_history_{excl}"]
                lines.append(f"| {run} (alpha={e['config']['alpha']:g}) | {'yes' if excl else 'no'} | {m['recall@10']:.4f} | "
                             f"{m['ndcg@10']:.4f} | {m['long_tail_recall@10']:.4f} | {m['long_tail_ndcg@10']:.4f} |")
        for run, e in r["runs"].items():
            if run.startswith("discriminator"):
                c = e["config"]
                lines += ["", f"`{run}` (trained on {c.get('negatives', 'hard' if c.get('hard_negatives') else 'random')} negatives, "
                          f"{c['epochs']} epoch(s), {c['positions_per_user']} positives/user): ROC-AUC on validation "
                          f"positives vs one negative per user: random negatives **{e['valid_auc_random']:.4f}**, "
                          f"Swing-hard negatives **{e['valid_auc_hard']:.4f}**."]
        if "auc_references" in r:
            ref = r["auc_references"]
            names = {"popularity": "candidate popularity", "swing_merge": "Swing merge score (K=200, last <= 10 items)",
                     "generator_logit": "alpha=4 generator's logit", "discriminator": "discriminator P(Yes)"}
            lines += ["", "Reference scorers on the same validation pairs (ROC-AUC):", "",
                      "| scorer | random negatives | Swing-hard negatives |", "|---|---|---|"]
            lines += [f"| {names[k]} | {ref['random'][k]:.4f} | {ref['hard'][k]:.4f} |" for k in ref["random"]]
        if r["runs"]:
            lines += ["", "| run | epochs (best) | train s | tokens/s | checkpoint |", "|---|---|---|---|---|"]
        for run, e in r["runs"].items():
            tr = e["training"]
            lines.append(f"| {run} | {len(tr['history'])} ({tr['best_epoch']}) | {tr['train_seconds']:.0f} | "
                         f"{tr['tokens_per_s']:,.0f} | `{e['checkpoint']}` |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=str(DATA_ROOT))
    p.add_argument("--datasets", nargs="+", default=["Beauty", "Toys_and_Games"])
    p.add_argument("--runs", nargs="+", default=["generator_a4", "discriminator", "generator_a1"])
    p.add_argument("--set", action="append", default=[], help="SFTConfig override for every run")
    p.add_argument("--disc-set", action="append", default=[], help="override for discriminator runs only (wins)")
    p.add_argument("--suffix", default="", help="appended to run names / checkpoint dirs (variants of a run)")
    p.add_argument("--tag", default="llm_quality")
    args = p.parse_args(argv)
    setup_logging()
    t0 = time.perf_counter()
    results: list[dict] = []
    record = {**run_record("llm_quality", argv), "results": results}

    def save() -> None:  # after every run, so a time-boxed job still leaves its numbers
        record["seconds"] = time.perf_counter() - t0
        write_result(args.tag, record, to_markdown(results, record, record["seconds"]))

    for name in args.datasets:
        results.append({})
        run_dataset(name, Path(args.data_root), args.set, args.runs, results[-1], save, args.disc_set, args.suffix)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_locked(main))
