"""The LLMs' tokenizer: item text sub-words + exactly one token per item (`<i{item_id}>`).

From scratch (no base model) a small BPE vocabulary is trained offline with the `tokenizers` library on the
item text (title | top category), so titles can appear in prompts; on a pretrained base (e.g. Llama-2) its own
tokenizer is kept and only the item tokens, prompt control tokens and (if not already single tokens) the
answers "Yes"/"No" are added. Item tokens are added in ascending item-id order, so they form one contiguous
block of ids - but callers should use `item_token_ids` / `token_item_ids`, never assume the offset.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa

from llm_i2i.llm.bases import resolve_base_model
from llm_i2i.llm.prompts import (
    CONTROL_TOKENS,
    DISCRIMINATOR_INSTRUCTION,
    ESCAPED_START,
    GENERATOR_INSTRUCTION,
    SPECIAL_TOKEN_MARK,
    escape_text,
    item_token,
)

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
YES, NO = "Yes", "No"
_ITEM_RE = re.compile(r"^<i(-?\d+)>$")


def item_texts(items: pa.Table) -> list[str]:
    """Each item's text for the tokenizer and text_pca: its `text` column, else its title, else ""."""
    cols = items.column_names
    text = items.column("text").to_pylist() if "text" in cols else [None] * items.num_rows
    title = items.column("title").to_pylist() if "title" in cols else [None] * items.num_rows
    return [t or ti or "" for t, ti in zip(text, title)]


def build_tokenizer(items: pa.Table, out_dir: str | Path | None = None, vocab_size: int = 4000, base_model: str | Path | None = None):
    """Tokenizer for `items` (ITEMS_SCHEMA); saved with `save_pretrained` to `out_dir` if given."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    from tokenizers import AddedToken

    item_ids = np.unique(items.column("item_id").to_numpy().astype(np.int64))
    if base_model is None:
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers, decoders

        tok = Tokenizer(models.BPE(unk_token=UNK))
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.decoder = decoders.BPEDecoder()
        special = [PAD, BOS, EOS, UNK, *CONTROL_TOKENS]
        # the escape character is in the alphabet, so an escaped title never reads as <unk>
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                      initial_alphabet=[ESCAPED_START])
        # the instructions are repeated so their words become whole tokens (shorter prompts)
        texts = [escape_text(t) for t in item_texts(items) if t] + [GENERATOR_INSTRUCTION, DISCRIMINATOR_INSTRUCTION] * 200
        tok.train_from_iterator(texts, trainer=trainer)
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK)
        hf.add_special_tokens({"additional_special_tokens": list(CONTROL_TOKENS)})
    else:
        base_dir = str(resolve_base_model(base_model))
        hf = AutoTokenizer.from_pretrained(base_dir, trust_remote_code=False, local_files_only=True)
        hf.add_special_tokens({"additional_special_tokens": list(CONTROL_TOKENS)})
        if hf.pad_token is None:
            hf.add_special_tokens({"pad_token": PAD})
    for word in (YES, NO):
        if len(hf.encode(word, add_special_tokens=False)) != 1:
            hf.add_tokens([AddedToken(word, single_word=True, normalized=False)])
    # special=True: never split, never normalised; they are kept on decode (skip_special_tokens=False)
    hf.add_tokens([AddedToken(item_token(i), special=True, normalized=False) for i in item_ids.tolist()], special_tokens=True)
    hf.padding_side = "right"
    _check_escapable(hf)
    if out_dir is not None:
        hf.save_pretrained(str(out_dir))
    return hf


def _check_escapable(tokenizer) -> None:
    """Prompts escape free text by its "<" (see prompts.py); a special token without one could hide in a title."""
    specials = set(tokenizer.all_special_tokens) | {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    bad = sorted(t for t in specials if SPECIAL_TOKEN_MARK not in t)
    if bad:
        raise ValueError(f"tokenizer has special token(s) {bad[:5]} without {SPECIAL_TOKEN_MARK!r}: titles in prompts could form them")


def item_vocabulary(tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """(item ids, their token ids), both ordered by item id; cached on the tokenizer object."""
    cached = getattr(tokenizer, "_llm_i2i_item_vocab", None)
    if cached is not None and cached[2] == len(tokenizer):
        return cached[0], cached[1]
    pairs = []
    for tok, tid in tokenizer.get_added_vocab().items():
        m = _ITEM_RE.match(tok)
        if m:
            pairs.append((int(m.group(1)), tid))
    pairs.sort()
    ids = np.array([p[0] for p in pairs], dtype=np.int64)
    tids = np.array([p[1] for p in pairs], dtype=np.int64)
    tokenizer._llm_i2i_item_vocab = (ids, tids, len(tokenizer))
    return ids, tids


def item_token_ids(tokenizer, item_ids) -> np.ndarray:
    """External item ids -> token ids; raises naming the ids the tokenizer does not know."""
    ids, tids = item_vocabulary(tokenizer)
    q = np.asarray(item_ids, dtype=np.int64)
    pos = np.clip(np.searchsorted(ids, q), 0, max(len(ids) - 1, 0))
    ok = (ids[pos] == q) if len(ids) else np.zeros(q.shape, bool)
    if not np.all(ok):
        raise KeyError(f"item id(s) {np.unique(q[~ok])[:5].tolist()} have no item token in this tokenizer")
    return tids[pos]


def token_item_ids(tokenizer, token_ids) -> np.ndarray:
    """Token ids -> external item ids; -1 for tokens that are not item tokens."""
    ids, tids = item_vocabulary(tokenizer)
    q = np.asarray(token_ids, dtype=np.int64)
    order = np.argsort(tids)
    st = tids[order]
    pos = np.clip(np.searchsorted(st, q), 0, max(len(st) - 1, 0))
    ok = (st[pos] == q) if len(st) else np.zeros(q.shape, bool)
    return np.where(ok, ids[order][pos], -1)


def answer_token_ids(tokenizer) -> tuple[int, int]:
    """Token ids of the discriminator's answers (Yes, No)."""
    yes = tokenizer.encode(YES, add_special_tokens=False)
    no = tokenizer.encode(NO, add_special_tokens=False)
    if len(yes) != 1 or len(no) != 1:
        raise ValueError(f"tokenizer does not encode Yes/No as single tokens ({yes}, {no}); build it with build_tokenizer")
    return yes[0], no[0]
