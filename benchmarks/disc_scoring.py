"""Discriminator scoring throughput: shared-context KV reuse vs one whole prompt per pair, in the same run.

The discriminate stage scores every generated (user, candidate) pair and, with `score_real`, every real training
pair. `llm_i2i.llm.scoring.yes_probability` runs each distinct context (instruction + history + <candidate>) once
and the candidate token on its KV cache; the reference here is the previous path, each whole prompt through the
model body. Both score the same batches of a finished pipeline run (its discriminator, candidates and dataset),
at the same torch threads, in interleaved rounds (best round kept); the page reports pairs/s and the largest
difference in P(Yes).

Workloads: `candidates` (the generator's candidates in file order: N per user, one history each) and
`one_per_history` (each user's rank-0 candidate: no two pairs share a history, only the instruction, like real
pairs).

    python -m benchmarks.disc_scoring --run out/beauty --pairs 20480
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from benchmarks._common import provenance, run_locked, run_record, write_result


def whole_prompt_yes_probability(model, tokenizer, histories, candidates, batch_size: int) -> np.ndarray:
    """The reference: every pair's whole prompt through the body, P(Yes) at its last token."""
    import torch

    from llm_i2i.llm.prompts import discriminator_prompt, encode_prompts
    from llm_i2i.llm.scoring import _pad_id, last_hidden
    from llm_i2i.llm.tokenizer import answer_token_ids

    ids = encode_prompts(tokenizer, [discriminator_prompt(h, c) for h, c in zip(histories, candidates)])
    h = last_hidden(model, ids, _pad_id(tokenizer), batch_size)
    yes, no = answer_token_ids(tokenizer)
    w = model.get_output_embeddings().weight[torch.tensor([yes, no])].float()
    return torch.softmax(h @ w.T, dim=1)[:, 0].double().detach().numpy()


def load_pairs(run: Path, n_pairs: int, history_len: int) -> dict[str, tuple[list[list[int]], np.ndarray]]:
    """Both workloads, with the histories the discriminate stage gives them (train split): the first `n_pairs`
    candidates in file order, and the rank-0 candidate of the first `n_pairs` users (one pair per history)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from llm_i2i.data import load_dataset
    from llm_i2i.llm.discriminate import DiscriminateConfig, attach_histories
    from llm_i2i.llm.generate import split_sequences

    full = load_dataset(run / "prepare" / "dataset").sequences()
    train = split_sequences(full, DiscriminateConfig().split)
    table = pq.read_table(run / "generate" / "candidates.parquet")
    table = table.filter(table.column("item_id").is_valid()).select(["user_id", "item_id", "rank"])
    workloads = {}
    for name, pairs in (("candidates", table.slice(0, n_pairs)),
                        ("one_per_history", table.filter(pc.equal(table.column("rank"), 0)).slice(0, n_pairs))):
        with_h = attach_histories(pairs.select(["user_id", "item_id"]), full, train, history_len)
        hist = with_h.column("history").to_pylist()
        keep = [r for r, h in enumerate(hist) if h]
        workloads[name] = ([hist[r] for r in keep], np.asarray(with_h.column("item_id").to_numpy())[keep])
    return workloads


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="a finished `llm-i2i run --out` directory")
    ap.add_argument("--pairs", type=int, default=20480)
    ap.add_argument("--batch-size", type=int, default=512, help="pairs per call, as `discriminate.batch_size`")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="disc_scoring")
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm_i2i.llm.scoring import yes_probability

    record = run_record("disc_scoring", argv)
    run = Path(args.run)
    ckpt = run / "sft_discriminator" / "model"
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForCausalLM.from_pretrained(ckpt).eval()
    workloads = load_pairs(run, args.pairs, 10)
    paths = {"whole_prompt": lambda h, c: whole_prompt_yes_probability(model, tokenizer, h, c, args.batch_size),
             "shared_context": lambda h, c: yes_probability(model, tokenizer, h, c, batch_size=args.batch_size)}
    rows = []
    for name, (hs, cs) in workloads.items():
        for threads in args.threads:
            torch.set_num_threads(threads)
            best = {p: float("inf") for p in paths}
            outputs = {}
            for _ in range(args.rounds):
                for p, fn in paths.items():  # interleaved: both paths see the same load
                    t0 = time.perf_counter()
                    probs = []
                    for s in range(0, len(cs), args.batch_size):
                        probs.append(fn(hs[s : s + args.batch_size], cs[s : s + args.batch_size]))
                    best[p] = min(best[p], time.perf_counter() - t0)
                    outputs[p] = np.concatenate(probs)
            diff = float(np.max(np.abs(outputs["whole_prompt"] - outputs["shared_context"])))
            for p in paths:
                rows.append({"workload": name, "threads": threads, "path": p, "seconds": best[p],
                             "pairs_per_s": len(cs) / best[p], "max_abs_diff_p_yes": diff})
            print(rows[-2], rows[-1], flush=True)
    record.update({"run": str(run), "pairs": {k: len(v[1]) for k, v in workloads.items()}, "batch_size": args.batch_size,
                   "rounds": args.rounds, "rows": rows})
    lines = ["# Discriminator scoring: shared-context KV reuse vs whole prompts", "", provenance(record), "",
             f"Pairs from `{run}` (its discriminator, candidates and dataset): `candidates` = the first "
             f"{len(workloads['candidates'][1]):,} generator candidates in file order (N per user), `one_per_history` = "
             f"the rank-0 candidate of {len(workloads['one_per_history'][1]):,} users (only the instruction is shared, "
             f"as for real pairs); {args.batch_size} pairs per call, best of {args.rounds} interleaved rounds.", "",
             "| workload | threads | whole prompt pairs/s | shared context pairs/s | speed-up | max abs diff P(Yes) |",
             "|---|---|---|---|---|---|"]
    for i in range(0, len(rows), 2):
        ref, new = rows[i], rows[i + 1]
        lines.append(f"| {ref['workload']} | {ref['threads']} | {ref['pairs_per_s']:,.0f} | {new['pairs_per_s']:,.0f} | "
                     f"{new['pairs_per_s'] / ref['pairs_per_s']:.2f}x | {ref['max_abs_diff_p_yes']:.1e} |")
    write_result(args.out, record, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_locked(main))
