import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_i2i.llm.prompts import (
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
