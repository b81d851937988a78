"""encode_example: labels mask the prompt and cover exactly the answer + EOS; truncation keeps the answer."""
from __future__ import annotations

import pytest

from raygen.data.schema import SkipLog
from raygen.lm.vocab import add_sid_tokens, sid_token
from raygen.tasks.encode import (IGNORE_INDEX, AnswerTooLong, encode_example, encode_examples, encode_prompt,
                                 render_prompt)

MESSAGES = [{"role": "system", "content": "You recommend items."},
            {"role": "user", "content": "the user bought <a_1><b_2><c_3>, <a_0><b_1><c_2>. predict the next item"}]
ANSWER = "<a_3><b_0><c_1>"


@pytest.fixture
def tok(tiny_tokenizer, tiny_llama):
    add_sid_tokens(tiny_llama(), tiny_tokenizer, [sid_token(lv, c) for lv in range(3) for c in range(4)])
    return tiny_tokenizer


def answer_part(enc):
    return [t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab != IGNORE_INDEX]


def test_labels_cover_exactly_the_answer(tok):
    enc = encode_example(tok, MESSAGES, ANSWER, max_len=256)
    prompt = encode_prompt(tok, MESSAGES)
    n = len(prompt)
    assert enc["input_ids"][:n] == prompt and enc["labels"][:n] == [IGNORE_INDEX] * n
    assert enc["labels"][n:] == enc["input_ids"][n:]
    assert tok.convert_ids_to_tokens(answer_part(enc)) == ["<a_3>", "<b_0>", "<c_1>", "<|im_end|>"]
    assert tok.decode(prompt) == ("<|im_start|>system\nYou recommend items.<|im_end|>\n<|im_start|>user\n"
                                  + MESSAGES[1]["content"] + "<|im_end|>\n<|im_start|>assistant\n")


def test_text_answer(tok):
    enc = encode_example(tok, MESSAGES[1:], "red shoes for the bike", max_len=256)
    assert tok.decode(answer_part(enc)) == "red shoes for the bike<|im_end|>"


def test_left_truncation_keeps_answer(tok):
    full = encode_example(tok, MESSAGES, ANSWER, max_len=256)
    enc = encode_example(tok, MESSAGES, ANSWER, max_len=12)
    assert len(enc["input_ids"]) == 12
    assert enc["input_ids"] == full["input_ids"][-12:] and enc["labels"] == full["labels"][-12:]
    assert len(answer_part(enc)) == 4
    with pytest.raises(AnswerTooLong):
        encode_example(tok, MESSAGES, ANSWER, max_len=4)


def test_encode_examples_counts(tok):
    examples = [{"task": "seqrec", "messages": MESSAGES, "answer": ANSWER},
                {"task": "sid2desc", "messages": MESSAGES, "answer": "red shoes " * 20}]
    skips = SkipLog()
    out = encode_examples(tok, examples, max_len=20, skips=skips)
    assert len(out) == 1 and out[0]["task"] == "seqrec" and len(out[0]["input_ids"]) == 20
    assert skips.counts["sid2desc: answer longer than max_len"] == 1
    assert skips.counts["seqrec: prompt left-truncated"] == 1
    with pytest.raises(AnswerTooLong):
        encode_examples(tok, examples, max_len=20)


def test_fallback_without_chat_template(tok):
    tok.chat_template = None
    assert render_prompt(tok, MESSAGES) == ("<|endoftext|>system: You recommend items.\nuser: "
                                            + MESSAGES[1]["content"] + "\nassistant: ")
    enc = encode_example(tok, MESSAGES, ANSWER, max_len=256)
    assert enc["input_ids"][0] == tok.bos_token_id
    assert tok.convert_ids_to_tokens(answer_part(enc)) == ["<a_3>", "<b_0>", "<c_1>", "<|im_end|>"]
    assert enc["input_ids"][: -4] == encode_prompt(tok, MESSAGES)
