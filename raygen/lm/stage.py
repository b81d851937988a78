"""The ``lm`` stage: backbone + SID vocabulary + SID row init, saved for the training stages.

Reads ``<run_dir>/sids/tokens.parquet``; writes into its stage folder:
- ``model/``: ``save_pretrained`` of model (safetensors) and tokenizer (with the SID tokens),
- ``sid_ids.json``: ``{"tokens", "ids", "levels", "codes"}`` parallel lists, sorted by (level, code),
- ``diagnostics/init_<strategy>_{spectrum,cosine}.png``; their numbers go to ``metrics.json``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from raygen.data.schema import DataError
from raygen.io import read_json, read_parquet, write_json
from raygen.lm.backbone import DTYPES, load_backbone
from raygen.lm.diagnostics import diagnose
from raygen.lm.init import init_sid_rows
from raygen.lm.vocab import add_sid_tokens, base_rows, sid_token
from raygen.runner import StageContext

log = logging.getLogger("raygen")

TOKEN_COLUMNS = ("level", "code", "token", "keywords")


def read_sid_tokens(path: Path) -> list[dict]:
    """Rows of a sids-stage ``tokens.parquet``, checked against the token naming contract, sorted."""
    table = read_parquet(path)
    missing = [c for c in TOKEN_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(str(path), None, missing[0], f"missing column(s) {missing}")
    rows = sorted(table.to_pylist(), key=lambda r: (r["level"], r["code"]))
    for i, r in enumerate(rows):
        if r["token"] != sid_token(r["level"], r["code"]):
            raise DataError(str(path), i, "token", f"{r['token']!r} does not match level {r['level']} "
                            f"code {r['code']} (expected {sid_token(r['level'], r['code'])!r})")
    if len({r["token"] for r in rows}) != len(rows):
        raise DataError(str(path), None, "token", "duplicate SID tokens")
    return rows


def run_lm_init(ctx: StageContext) -> dict:
    cfg = ctx.cfg.lm
    rows = read_sid_tokens(ctx.input("sids") / "tokens.parquet")
    model, tokenizer = load_backbone(cfg)
    sid_ids = add_sid_tokens(model, tokenizer, [r["token"] for r in rows])
    report = init_sid_rows(model, tokenizer, sid_ids, rows, strategy=cfg.init, sa_init_depth=cfg.sa_init_depth,
                           seed=cfg.seed, std=cfg.init_std, prefix_space=cfg.sa_init_prefix_space,
                           sa_init_rescale=cfg.sa_init_rescale)
    log.info("SID rows initialised: %s", report)
    numbers = diagnose(model, sid_ids, ctx.out / "diagnostics", tag=f"init_{cfg.init}",
                       text_ids=base_rows(tokenizer, sid_ids), seed=cfg.seed)
    model.save_pretrained(ctx.out / "model")
    tokenizer.save_pretrained(ctx.out / "model")
    write_json(ctx.out / "sid_ids.json", {"tokens": [r["token"] for r in rows], "ids": sid_ids.tolist(),
                                          "levels": [r["level"] for r in rows], "codes": [r["code"] for r in rows]})
    return {"vocab_size": len(tokenizer), "sid_tokens": len(rows),
            "num_hidden_layers": model.config.get_text_config().num_hidden_layers,
            "parameters": sum(p.numel() for p in model.parameters()), "init": report, "diagnostics": numbers}


def load_lm_output(folder: str | Path, dtype: str = "float32"):
    """``(model, tokenizer, sid_ids)`` from an ``lm`` stage folder (for the training/eval stages)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    model = AutoModelForCausalLM.from_pretrained(folder / "model", dtype=DTYPES[dtype], local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder / "model", local_files_only=True)
    sid_ids = torch.tensor(read_json(folder / "sid_ids.json")["ids"], dtype=torch.long)
    return model, tokenizer, sid_ids

