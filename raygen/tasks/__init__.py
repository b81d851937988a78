"""SFT tasks: instruction templates, example builders (seqrec, STAR alignment, TS-Align), mixing, encoding.

    cfg = TasksConfig()
    examples = build_sft_examples(samples, items, codes, tokens, cfg, split="train")
    encoded = encode_examples(tokenizer, examples, cfg.max_len, skips=SkipLog())
"""
from raygen.tasks.builders import (alignment_examples, build_sft_examples, items_by_id, mix, seqrec_examples,
                                   sids_by_item, token_align_examples)
from raygen.tasks.config import TasksConfig
from raygen.tasks.encode import IGNORE_INDEX, AnswerTooLong, encode_example, encode_examples, encode_prompt
from raygen.tasks.templates import ALIGN_DIRECTIONS, DEFAULT_TEMPLATES, TASKS, TOKEN_DIRECTIONS

__all__ = ["TasksConfig", "seqrec_examples", "alignment_examples", "token_align_examples", "mix",
           "build_sft_examples", "sids_by_item", "items_by_id", "encode_example", "encode_examples",
           "encode_prompt", "AnswerTooLong", "IGNORE_INDEX", "TASKS", "ALIGN_DIRECTIONS", "TOKEN_DIRECTIONS",
           "DEFAULT_TEMPLATES"]
