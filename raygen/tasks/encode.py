"""Encode examples into token ids with loss on the answer only, through the tokenizer's chat template.

Prompt ids: the chat template rendered with ``add_generation_prompt=True`` (so it ends where the
assistant's reply starts), tokenised with ``add_special_tokens=False`` because the template already
writes any special tokens. Answer ids: the answer text (``add_special_tokens=False``) + EOS. Labels
are aligned with ``input_ids`` (the HF convention: the model shifts them), -100 on the prompt.
:func:`encode_prompt` gives exactly the prompt ids, for generation.

Tokenizers without a chat template use a plain fallback format: the BOS token text (if any), then
one line ``"{role}: {content}"`` per message, then ``"assistant: "`` (the answer follows directly).
"""
from __future__ import annotations

from raygen.data.schema import SkipLog

IGNORE_INDEX = -100


class AnswerTooLong(ValueError):
    """The answer (with EOS) leaves no room for a prompt token within max_len."""


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """The prompt text: chat template with generation prompt, or the documented fallback format."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    lines = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    return f"{tokenizer.bos_token or ''}{lines}assistant: "


def encode_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """Prompt token ids (what generation starts from), identical to the prompt part of encode_example."""
    return list(tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"])


def encode_answer(tokenizer, answer: str) -> list[int]:
    """Answer ids followed by EOS."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; set one so answers can end")
    return list(tokenizer(answer, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]


def _encode(tokenizer, messages: list[dict], answer: str, max_len: int) -> tuple[dict, int]:
    """The encoded example and how many prompt ids were cut from the left."""
    answer_ids = encode_answer(tokenizer, answer)
    if len(answer_ids) >= max_len:
        raise AnswerTooLong(f"answer of {len(answer_ids)} tokens (with EOS) does not fit max_len={max_len}: "
                            f"{answer[:80]!r}")
    prompt_ids = encode_prompt(tokenizer, messages)
    cut = max(0, len(prompt_ids) + len(answer_ids) - max_len)
    prompt_ids = prompt_ids[cut:]
    return {"input_ids": prompt_ids + answer_ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids}, cut


def encode_example(tokenizer, messages: list[dict], answer: str, max_len: int) -> dict:
    """``{"input_ids", "labels"}`` of prompt + answer + EOS, at most ``max_len`` ids.

    When too long, the prompt is cut from the left (the instruction's oldest part, e.g. the oldest
    history items) and the answer is kept whole; AnswerTooLong if the answer alone does not fit.
    """
    return _encode(tokenizer, messages, answer, max_len)[0]


def encode_examples(tokenizer, examples: list[dict], max_len: int, skips: SkipLog | None = None) -> list[dict]:
    """Encode builder examples to ``{"task", "input_ids", "labels"}``.

    With ``skips``, answers too long for ``max_len`` are skipped and counted, and left-cut prompts are
    counted too; without it, AnswerTooLong propagates.
    """
    from raygen.tasks.sequence import SidIds, encode_sequence_examples

    out, sid_ids = [], SidIds(tokenizer)
    for i, ex in enumerate(examples):
        if "sids" in ex:  # sequence-format next-item example (raygen.tasks.sequence)
            out += encode_sequence_examples(tokenizer, [ex], max_len, skips, sid_ids)
            continue
        try:
            enc, cut = _encode(tokenizer, ex["messages"], ex["answer"], max_len)
        except AnswerTooLong as e:
            if skips is None:
                raise
            skips.add(f"{ex['task']}: answer longer than max_len", f"example {i}: {e}")
            continue
        if cut and skips is not None:
            skips.add(f"{ex['task']}: prompt left-truncated", f"example {i}: {cut} ids cut")
        out.append({"task": ex["task"], **enc})
    return out
