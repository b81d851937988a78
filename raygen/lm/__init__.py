"""LM backbone, SID vocabulary, SID row initialisation (random / mean / SA-Init) and embedding diagnostics.

    model, tok = load_backbone(LmConfig(num_layers=2))
    ids = add_sid_tokens(model, tok, ["<a_0>", "<a_1>", "<b_0>"])
    init_sid_rows(model, tok, ids, tokens_rows, strategy="sa_init", sa_init_depth=2)

The ``lm`` pipeline stage runs :func:`raygen.lm.stage.run_lm_init` (``raygen.pipeline.stage("lm")``).
"""
from raygen.lm.backbone import load_backbone
from raygen.lm.config import LmConfig
from raygen.lm.diagnostics import diagnose, effective_rank
from raygen.lm.init import init_sid_rows
from raygen.lm.vocab import add_sid_tokens, parse_sid, sid_matrix, sid_text, sid_token, sid_token_ids

__all__ = ["LmConfig", "load_backbone", "add_sid_tokens", "sid_token_ids", "sid_matrix", "sid_token", "sid_text",
           "parse_sid", "init_sid_rows", "diagnose", "effective_rank"]
