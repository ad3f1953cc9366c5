"""Does a frozen pretrained encoder read item text better than its token embeddings? Cost and separation.

Issue 17 lists "a frozen pretrained model that encodes item text once" as a CPU candidate. The shipped `text_pca`
item init reads only SmolLM2-135M's token-embedding matrix (the mean over the text's tokens, no forward pass). This
runs the whole base once over each text instead and pools its final hidden states: the mean over the text's
tokens, or the last token's. Each encoding is scored the way `disc_content_features` scores text: the candidate's
best cosine (vectors centred and normalised) with the user's last <= 10 items, on `auc_pairs` (each sampled user's
validation item against one random negative). That is ROC-AUC against random negatives, the issue's discriminator
target. The page also projects what encoding the whole catalogue would cost, from the measured tokens per second.

    python -m benchmarks.item_text_encoders --users 1000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from transformers import AutoTokenizer

from benchmarks._common import DATA_ROOT, RESULTS, provenance, run_locked, run_record, write_result
from benchmarks.disc_content_features import best_cosine
from llm_i2i.data import load_dataset
from llm_i2i.data.split import leave_one_out
from llm_i2i.llm.bases import resolve_base_model
from llm_i2i.llm.modeling import forward_text_vectors, text_embeddings
from llm_i2i.llm.sft_metrics import auc_pairs, roc_auc
from llm_i2i.llm.tokenizer import item_texts
from llm_i2i.progress import log, setup_logging

ENCODINGS = {
    "token_mean": "mean of the text's input token embeddings (what text_pca reads; no forward pass)",
    "final_mean": "forward pass, mean of the final hidden states over the text's tokens (what text_encoder_pca reads)",
    "final_last": "forward pass, the final hidden state of the text's last token",
}


def run_dataset(root: Path, name: str, users: int, seed: int, base: str, batch_size: int) -> dict[str, Any]:
    ds = load_dataset(root / name)
    split = leave_one_out(ds.sequences())
    histories, candidates, labels = auc_pairs(split, "valid", None, 10, users, seed)
    texts = item_texts(ds.items)
    row_in_catalogue = {int(i): n for n, i in enumerate(ds.items.column("item_id").to_pylist())}
    needed = sorted({i for h, c in zip(histories, candidates) for i in (*h, c)})
    row_of = {item: n for n, item in enumerate(needed)}
    needed_texts = [texts[row_in_catalogue[i]] for i in needed]
    log.info(f"{name}: {len(labels)} pairs, {len(needed)} items to encode")
    t0 = time.perf_counter()
    vectors = {"token_mean": text_embeddings(needed_texts, base)}
    token_seconds = time.perf_counter() - t0
    path = resolve_base_model(base)
    t0 = time.perf_counter()
    vectors.update(forward_text_vectors(needed_texts, path, batch_size=batch_size))
    forward_seconds = time.perf_counter() - t0
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    tokens = sum(map(len, tokenizer(needed_texts, add_special_tokens=False)["input_ids"]))
    catalogue_words = sum(len(t.split()) for t in texts)  # only its ratio to the sample's is used
    sample_words = sum(len(t.split()) for t in needed_texts)
    projected = forward_seconds * catalogue_words / max(sample_words, 1)
    return {"pairs": int(len(labels)), "items_encoded": len(needed), "catalogue_items": len(texts),
            "auc_random": {k: roc_auc(labels, best_cosine(v, row_of, histories, candidates))
                           for k, v in vectors.items()},
            "token_mean_seconds": token_seconds, "forward_seconds": forward_seconds, "forward_tokens": tokens,
            "forward_tokens_per_s": tokens / forward_seconds,
            "forward_catalogue_seconds_projected": projected}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=str(DATA_ROOT))
    p.add_argument("--datasets", nargs="+", default=["Beauty", "Toys_and_Games"])
    p.add_argument("--users", type=int, default=1000, help="validation users sampled per dataset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--base", default="smollm2-135m")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", default=str(RESULTS / "item_text_encoders"))
    args = p.parse_args(argv)
    setup_logging()
    record = run_record("item_text_encoders", argv)
    record.update(users=args.users, seed=args.seed, base=args.base, torch_threads=torch.get_num_threads(),
                  encodings=ENCODINGS)
    record["results"] = res = {name: run_dataset(Path(args.data_root), name, args.users, args.seed, args.base,
                                                 args.batch_size) for name in args.datasets}
    lines = ["# Item text: token embeddings against a frozen encoder's forward pass", "", provenance(record), "",
             f"Base `{args.base}`, frozen. Pairs: `auc_pairs` on {args.users} sampled validation users per dataset "
             f"(seed {args.seed}): the validation item against one random negative. Score: the candidate's best "
             "cosine with the user's last <= 10 items. Forward passes in float32 on "
             f"{record['torch_threads']} torch thread(s).", "",
             "| dataset | " + " | ".join(f"`{k}` ROC-AUC" for k in ENCODINGS)
             + " | forward tokens/s | whole catalogue by forward pass, s (projected) |",
             "|---|" + "---|" * (len(ENCODINGS) + 2)]
    for name, r in res.items():
        lines.append(f"| {name} | " + " | ".join(f"{r['auc_random'][k]:.3f}" for k in ENCODINGS)
                     + f" | {r['forward_tokens_per_s']:,.0f} | {r['forward_catalogue_seconds_projected']:,.0f} "
                     f"({r['catalogue_items']:,} items) |")
    lines += ["", "Encodings: " + "; ".join(f"`{k}`: {v}" for k, v in ENCODINGS.items()) + ".",
              "The projection scales the sample's forward seconds by the catalogue's words over the sample's."]
    write_result(args.out, record, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_locked(main))
