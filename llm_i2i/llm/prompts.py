"""The ONLY place prompt templates live; training and inference render through these same functions.

Generator prompt P_g:  instruction [<user> user text] <history><i..><i..>...  -> the next token is an item
Discriminator P_d:     instruction <history><i..>... <candidate>[title ]<i..>  -> "Yes" | "No"

The discriminator's answer is predicted AT the candidate's item token (its title, if any, comes before it):
attention from that position is queried by the candidate itself, so even a 1-layer model can match the
candidate against the history (with a separate <answer> token after it, measured: no better than chance on
the small synthetic set after 4 epochs).

Item tokens are written back to back (no spaces) so an item costs exactly one token with any tokenizer.
With `titles`, each item token is followed by its title and a <sep> token. Histories longer than
`max_history` keep their most recent items (never an error). `encode_prompts` prepends BOS and tokenises
without the tokenizer's own special-token post-processing, so the ids are the same for a scratch
tokenizer and a Llama one.

Free text (titles, profiles) is escaped: every special token (ours, and those of the Llama-family bases)
contains "<", so a title's "<" - and the compatibility forms that NFKC folds into "<" - become "‹"
(U+2039). A title holding "<i42>" or "<sep>" then stays text and never becomes a special token.
`build_tokenizer` refuses a base whose special tokens this would not cover.
"""

from __future__ import annotations

from typing import Mapping, Sequence

GENERATOR_INSTRUCTION = "Given the user's recent items, predict the next item."
DISCRIMINATOR_INSTRUCTION = "Will the user interact with the candidate item? Answer Yes or No."
# prompt control tokens: this module is the only place that arranges them; the tokenizer adds them
USER, HISTORY, CANDIDATE, SEP = "<user>", "<history>", "<candidate>", "<sep>"
CONTROL_TOKENS = (USER, HISTORY, CANDIDATE, SEP)
SPECIAL_TOKEN_MARK = "<"
ESCAPED_START = "\u2039"
_ESCAPES = str.maketrans({c: ESCAPED_START for c in ("<", "\ufe64", "\uff1c")})  # "<", small and fullwidth "<"


def item_token(item_id: int) -> str:
    return f"<i{int(item_id)}>"


def escape_text(text: str) -> str:
    """Free text as it may appear in a prompt: nothing in it can form a special token."""
    return text.translate(_ESCAPES)


def _recent(history: Sequence[int], max_history: int | None) -> list[int]:
    items = [int(i) for i in history]
    if max_history is not None and max_history >= 0 and len(items) > max_history:
        items = items[len(items) - max_history :] if max_history else []
    return items


def _render_items(items: Sequence[int], titles: Mapping[int, str] | None) -> str:
    if titles is None:
        return "".join(item_token(i) for i in items)
    return "".join(f"{item_token(i)} {_title(titles, i)}{SEP}" for i in items)


def _title(titles: Mapping[int, str], item_id: int) -> str:
    return escape_text((titles.get(int(item_id)) or "").strip())


def _user_part(user_id: int | str | None, profile: str | None) -> str:
    if user_id is None and not profile:
        return ""
    text = " ".join(p for p in (None if user_id is None else f"user {user_id}", profile) if p)
    return f"{USER} {escape_text(text)}"


def generator_prompt(
    history_item_ids: Sequence[int],
    user_id: int | str | None = None,
    titles: Mapping[int, str] | None = None,
    max_history: int | None = 10,
    profile: str | None = None,
) -> str:
    """P_g for the user's most recent `max_history` items (None: all of them, as in SFT teacher forcing)."""
    items = _recent(history_item_ids, max_history)
    return f"{GENERATOR_INSTRUCTION}{_user_part(user_id, profile)}{HISTORY}{_render_items(items, titles)}"


def discriminator_prompt(
    history_item_ids: Sequence[int],
    candidate_item_id: int,
    user_id: int | str | None = None,
    titles: Mapping[int, str] | None = None,
    max_history: int | None = 10,
    profile: str | None = None,
) -> str:
    """P_d; the model's next token after it is the answer ("Yes"/"No")."""
    return discriminator_context(history_item_ids, user_id, titles, max_history, profile) + discriminator_candidate(
        candidate_item_id, titles)


def discriminator_context(
    history_item_ids: Sequence[int],
    user_id: int | str | None = None,
    titles: Mapping[int, str] | None = None,
    max_history: int | None = 10,
    profile: str | None = None,
) -> str:
    """P_d up to and including the <candidate> token: the part every candidate of one user shares. It ends in a
    special token, so it tokenises the same alone as inside the whole prompt (scoring reuses its KV cache)."""
    items = _recent(history_item_ids, max_history)
    return f"{DISCRIMINATOR_INSTRUCTION}{_user_part(user_id, profile)}{HISTORY}{_render_items(items, titles)}{CANDIDATE}"


def discriminator_candidate(candidate_item_id: int, titles: Mapping[int, str] | None = None) -> str:
    """The rest of P_d after `discriminator_context`: the candidate ([title ]item token)."""
    cand = item_token(candidate_item_id)
    return cand if titles is None else f" {_title(titles, candidate_item_id)} {cand}"


def encode_prompts(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    """BOS + tokens, identical for training and inference."""
    if not prompts:
        return []
    enc = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    return [([bos] if bos is not None else []) + list(ids) for ids in enc]


def titles_from_items(items) -> dict[int, str]:
    """item_id -> title (empty string for items without one) from an ITEMS_SCHEMA table."""
    return {int(i): (t or "") for i, t in zip(items.column("item_id").to_pylist(), items.column("title").to_pylist())}
