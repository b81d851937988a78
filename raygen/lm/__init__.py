"""LM backbone, SID vocabulary, SID row initialisation (random / mean / SA-Init) and embedding diagnostics.

    model, tok = load_backbone(LmConfig(num_layers=2))
    ids = add_sid_tokens(model, tok, ["<a_0>", "<a_1>", "<b_0>"])
    init_sid_rows(model, tok, ids, tokens_rows, strategy="sa_init", sa_init_depth=2)

The ``lm`` pipeline stage runs :func:`raygen.lm.stage.run_lm_init` (``raygen.pipeline.stage("lm")``).
"""
from raygen.lazy import exports_of, lazy_exports

_EXPORTS = exports_of(**{
    "raygen.lm.backbone": ('load_backbone',),
    "raygen.lm.config": ('LmConfig',),
    "raygen.lm.diagnostics": ('diagnose', 'effective_rank'),
    "raygen.lm.init": ('init_sid_rows',),
    "raygen.lm.vocab": ('add_sid_tokens', 'parse_sid', 'sid_matrix', 'sid_text', 'sid_token', 'sid_token_ids'),
})
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
