import numpy as np
import pytest

from llm_i2i.llm.tokenizer import (
    answer_token_ids,
    build_tokenizer,
    item_token,
    item_token_ids,
    item_vocabulary,
    token_item_ids,
)
from tests.llm.conftest import make_items


def test_every_item_is_exactly_one_token(tokenizer, items):
    for iid in items.column("item_id").to_pylist():
        ids = tokenizer.encode(item_token(iid), add_special_tokens=False)
        assert ids == [int(item_token_ids(tokenizer, [iid])[0])]


def test_item_mapping_roundtrip_and_unknown(tokenizer, items):
    ids = items.column("item_id").to_numpy()
    rng = np.random.default_rng(1)
    q = rng.choice(ids, 50)
    tids = item_token_ids(tokenizer, q)
    assert np.array_equal(token_item_ids(tokenizer, tids), q)
    assert len(set(item_token_ids(tokenizer, ids).tolist())) == len(ids)
    assert token_item_ids(tokenizer, [tokenizer.bos_token_id])[0] == -1
    with pytest.raises(KeyError, match="999"):
        item_token_ids(tokenizer, [999])
    vocab_ids, _ = item_vocabulary(tokenizer)
    assert np.array_equal(vocab_ids, np.sort(ids))


def test_answers_are_single_distinct_tokens(tokenizer):
    yes, no = answer_token_ids(tokenizer)
    assert yes != no
    assert tokenizer.convert_ids_to_tokens([yes, no]) == ["Yes", "No"]


def test_adjacent_item_tokens_and_text(tokenizer):
    ids = tokenizer.encode("<i3><i4> red nail<sep>", add_special_tokens=False)
    assert ids[:2] == item_token_ids(tokenizer, [3, 4]).tolist()
    assert "<i3>" not in tokenizer.decode(ids[2:])


def test_save_and_reload(tmp_path, items):
    from transformers import AutoTokenizer

    tok = build_tokenizer(make_items(12, first_id=100), out_dir=tmp_path, vocab_size=150)
    again = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    q = np.arange(100, 112)
    assert np.array_equal(item_token_ids(again, q), item_token_ids(tok, q))
    assert answer_token_ids(again) == answer_token_ids(tok)
