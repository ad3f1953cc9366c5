"""Does a pretrained base make a better discriminator? The scratch model against SmolLM2-135M on one slice of users.

Full SFT of the 135M base on all of Beauty does not fit 2 CPU cores (issue 17), so every variant is fine-tuned as a
discriminator (random negatives, the paper's setting) on the same seeded slice of users, for the same epochs, and
scored on the same validation pairs (`discriminator_auc`: each user's validation item against one random or one
Swing-hard negative). The scratch model starts from random weights here, not from a fine-tuned generator, so the
comparison isolates what the base brings: the pretrained weights and item tokens initialised from the mean of
their titles' token embeddings (`item_init: title_mean`). The base is tuned in full, or with LoRA on its top
layers (`model.lora_rank`, the cheaper way in), reading item tokens alone or each item's title too (`titles`,
the way its pretraining knowledge can reach the items). The page also projects one full-Beauty epoch from the
measured seconds.

    python -m benchmarks.disc_pretrained_slice --users 300 --epochs 2
    python -m benchmarks.disc_pretrained_slice --users 500 --epochs 2 --variants smollm2_lora_titles --keep-measured

`--keep-measured` adds the variants it runs to the existing record of the same slice (dataset, users, seed, epochs,
batch size) instead of starting a new one; each variant row names the day, code version and CPU it was measured with.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks._common import DATA_ROOT, REPO, RESULTS, provenance, run_locked, run_record, utc_now, write_result
from llm_i2i.config import load_config, to_dict
from llm_i2i.data import Dataset, load_dataset, save_dataset
from llm_i2i.llm.modeling import load_checkpoint
from llm_i2i.llm.sft import SFTConfig, run_sft
from llm_i2i.llm.sft_metrics import discriminator_auc
from llm_i2i.progress import log, setup_logging

VARIANTS: dict[str, tuple[str, list[str]]] = {
    # the scratch model's lr as recorded (the library default before it moved to 2e-3)
    "scratch": ("2-layer 128-wide Llama from random weights (the CPU default model)", ["lr=0.003"]),
    # a pretrained model fine-tunes at a much smaller step than the scratch default (3e-3); 2e-4 is the usual
    # order for full fine-tuning of a ~100M model with AdamW, and keeps the title-initialised item tokens near
    # where they start in a few hundred steps
    "smollm2": ("SmolLM2-135M-Instruct, item tokens from their titles' mean token embedding",
                ["model.base_model=smollm2-135m", "lr=0.0002"]),
    # adapters on 4 of the 30 layers: backward stops there; LoRA takes a larger step than full fine-tuning (the
    # common 1e-4..1e-3 range, the top of it for a few hundred steps)
    "smollm2_lora": ("SmolLM2-135M-Instruct, LoRA rank 16 on its top 4 of 30 layers, the rest frozen",
                     ["model.base_model=smollm2-135m", "model.lora_rank=16", "model.lora_layers=4", "lr=0.001"]),
    # the same, each history item and the candidate followed by its title; 10 titles need a longer window (scoring
    # is capped by padded tokens, `sft.eval_batch_tokens`, so these long prompts no longer need a smaller batch)
    "smollm2_lora_titles": ("SmolLM2-135M-Instruct, LoRA as above, titles in the prompt",
                            ["model.base_model=smollm2-135m", "model.lora_rank=16", "model.lora_layers=4",
                             "lr=0.001", "titles=true", "max_length=384"]),
}


def user_slice(ds: Dataset, users: int, seed: int) -> Dataset:
    """`users` users drawn with `seed`, each with the whole sequence; the item table keeps the items they touch."""
    ids = np.unique(ds.interactions.column("user_id").to_numpy())
    if users > len(ids):
        raise ValueError(f"--users {users}: the dataset has {len(ids)} users")
    chosen = np.random.default_rng(seed).choice(ids, size=users, replace=False)
    inter = ds.interactions.filter(pc.is_in(ds.interactions.column("user_id"), value_set=pa.array(chosen)))
    used = np.unique(inter.column("item_id").to_numpy())
    items = ds.items.filter(pc.is_in(ds.items.column("item_id"), value_set=pa.array(used)))
    return Dataset(f"{ds.name}_slice{users}_s{seed}", inter, items,
                   {"slice_of": ds.name, "users": users, "seed": seed})


SLICE_KEYS = ("dataset", "users", "seed", "epochs", "batch_size")


def measured_variants(path: Path, record: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The variants an earlier record at `path` measured on the same slice, and its notes; an error if it used
    another slice, so rows measured on different data never share a table."""
    if not path.exists():
        return {}, []
    old = json.loads(path.read_text())
    differs = {k: (old.get(k), record[k]) for k in SLICE_KEYS if old.get(k, record[k]) != record[k]}
    if differs:
        raise SystemExit(f"--keep-measured: {path} measured another slice ({differs}); drop the flag or pass --out")
    # rows measured before variants carried their own provenance inherit the record's
    return {name: {"code_version": old.get("code_version"), "started_utc": old.get("started_utc"),
                   "machine": old.get("machine"), **v}
            for name, v in old["variants"].items()}, old.get("notes", [])


def run(args: argparse.Namespace) -> dict[str, Any]:
    record = run_record("disc_pretrained_slice", args.argv)
    full = load_dataset(Path(args.data_root) / args.dataset)
    ds = user_slice(full, args.users, args.seed)
    canon = REPO / "out" / "data" / ds.name
    if not (canon / "interactions.parquet").exists():
        save_dataset(ds, canon)
    record.update(dataset=args.dataset, users=args.users, seed=args.seed, epochs=args.epochs,
                  slice_interactions=ds.interactions.num_rows, slice_items=ds.items.num_rows,
                  batch_size=args.batch_size,
                  full_users=int(len(np.unique(full.interactions.column("user_id").to_numpy()))), variants={},
                  notes=[])
    if args.keep_measured:
        out = Path(args.out) if Path(args.out).parent != Path(".") else RESULTS / args.out  # as write_result places it
        kept, record["notes"] = measured_variants(out.with_name(out.name + ".json"), record)
        record["variants"] = {n: v for n, v in kept.items() if n not in args.variants}
    if args.note:
        record["notes"].append(args.note)
    common = ["role=discriminator", "negatives=random", f"epochs={args.epochs}", "patience=0",
              f"batch_size={args.batch_size}", "warmup_steps=10", "positions_per_user=1", "model.dropout=0.0",
              f"eval_users={args.users}", f"seed={args.seed}"]
    for name in args.variants:
        what, sets = VARIANTS[name]
        cfg = load_config(SFTConfig, None, [*common, *sets])
        started, t0 = utc_now(), time.perf_counter()
        ckpt = run_sft(cfg, canon, REPO / "out" / "disc_slice" / f"{ds.name}_{name}_e{args.epochs}")
        sft_seconds = time.perf_counter() - t0
        training = load_checkpoint(ckpt)[2]["training"]
        t1 = time.perf_counter()
        auc_random = discriminator_auc(ckpt, canon, "random")
        auc_hard = discriminator_auc(ckpt, canon, "hard")
        record["variants"][name] = {
            "what": f"{what}; {args.users} users, {args.epochs} epoch(s)", "config": to_dict(cfg),
            "auc_random": auc_random, "auc_hard": auc_hard, "train_seconds": training["train_seconds"],
            "sft_seconds": sft_seconds, "tokens": training["tokens"], "tokens_per_s": training["tokens_per_s"],
            "eval_seconds": time.perf_counter() - t1, "best_epoch": training.get("best_epoch"),
            "code_version": record["code_version"], "started_utc": started, "machine": record["machine"],
        }
        log.info(f"{name}: AUC random {auc_random:.4f}, hard {auc_hard:.4f}")
        write_result(args.out, record, render(record))
    return record


def render(record: dict[str, Any]) -> str:
    scale = record["full_users"] / record["users"]
    out = ["# The discriminator on a slice of users: scratch model vs a pretrained base", "", provenance(record), "",
           f"{record['dataset']}: {record['users']} users drawn with seed {record['seed']} "
           f"({record['slice_interactions']:,} interactions, {record['slice_items']:,} items), {record['epochs']} "
           "epoch(s), random negatives, ROC-AUC on the slice's validation items against one random or one "
           "Swing-hard negative per user. Every variant starts from its own weights (no generator).", "",
           "| variant | ROC-AUC random | ROC-AUC hard | trained tokens | train s | tokens/s | eval s | "
           "one full epoch, projected h | measured (day, code, CPU) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, v in record["variants"].items():
        per_epoch = v["train_seconds"] / record["epochs"] * scale / 3600
        when = (v.get("started_utc") or record.get("started_utc") or "?")[:10]
        machine = v.get("machine") or record["machine"]
        cpu = machine.get("cpu", "?") if isinstance(machine, dict) else machine
        out.append(f"| {name} | {v['auc_random']:.3f} | {v['auc_hard']:.3f} | {v['tokens']:,} | "
                   f"{v['train_seconds']:,.0f} | {v['tokens_per_s']:,.0f} | {v['eval_seconds']:,.0f} | {per_epoch:.1f} | "
                   f"{when}, `{v.get('code_version', record.get('code_version'))}`, {cpu} |")
    out += ["", f"Projection: the slice's seconds per epoch x {scale:.1f} (full {record['dataset']} has "
            f"{record['full_users']:,} users; the discriminator's examples grow with users).",
            "On a slice most items have no Swing neighbour, and a user whose last item has none gets a random "
            "negative instead (`auc_pairs`), so the hard column is close to the random one here."]
    v = record["variants"]
    if "scratch" in v:
        for name in [n for n in v if n != "scratch"]:
            gain = v[name]["auc_random"] - v["scratch"]["auc_random"]
            cost = v[name]["train_seconds"] / max(v["scratch"]["train_seconds"], 1e-9)
            out.append(f"At equal data `{name}` moves ROC-AUC against random negatives by {gain:+.3f} over the "
                       f"scratch model, for {cost:,.0f}x its training seconds.")
    for note in record.get("notes", []):
        out += ["", f"Note: {note}"]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", default=str(DATA_ROOT))
    ap.add_argument("--dataset", default="Beauty")
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", default="disc_pretrained_slice")
    ap.add_argument("--keep-measured", action="store_true",
                    help="keep the variants (and notes) the existing record at --out measured on the same slice")
    ap.add_argument("--note", default="", help="how the run went (machine state, reruns), kept with the record")
    args = ap.parse_args(argv)
    args.argv = argv
    setup_logging()
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_locked(main))
