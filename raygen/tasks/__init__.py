"""SFT tasks: instruction templates, example builders (seqrec, STAR alignment, TS-Align), mixing, encoding.

    cfg = TasksConfig()
    examples = build_sft_examples(samples, items, codes, tokens, cfg, split="train")
    encoded = encode_examples(tokenizer, examples, cfg.max_len, skips=SkipLog())
"""
from raygen.lazy import exports_of, lazy_exports

_EXPORTS = exports_of(**{
    "raygen.tasks.builders": ('alignment_examples', 'build_sft_examples', 'items_by_id', 'mix', 'seqrec_examples', 'sids_by_item', 'token_align_examples'),
    "raygen.tasks.config": ('TasksConfig',),
    "raygen.tasks.encode": ('IGNORE_INDEX', 'AnswerTooLong', 'encode_example', 'encode_examples', 'encode_prompt'),
    "raygen.tasks.templates": ('ALIGN_DIRECTIONS', 'DEFAULT_TEMPLATES', 'TASKS', 'TOKEN_DIRECTIONS'),
})
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
