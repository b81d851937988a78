"""Load the causal-LM backbone and its tokenizer offline, optionally keeping only the first N layers."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from raygen.configbase import ConfigError
from raygen.lm.config import LmConfig
from raygen.models import hub_downloads_allowed, hub_id_error, resolve_lm

log = logging.getLogger("raygen")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def load_backbone(cfg: LmConfig):
    """Return ``(model, tokenizer)`` for ``cfg.model``, loaded without network access unless both
    ``cfg.allow_download`` and the user's ``HF_HUB_OFFLINE=0`` allow the Hub (:mod:`raygen.models`); an HF
    id that is not in the local HF cache otherwise fails with a ConfigError naming both switches.

    ``cfg.num_layers > 0`` keeps the first N decoder layers: the config is edited before loading,
    so transformers only materialises those layers (the checkpoint's deeper weights are skipped).
    The tokenizer always has a pad token afterwards (its EOS, or a new ``<|pad|>`` token).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = resolve_lm(cfg.model)
    local = Path(source).is_dir()
    opts = {"trust_remote_code": cfg.trust_remote_code,
            "local_files_only": local or not (cfg.allow_download and hub_downloads_allowed())}
    try:
        config = AutoConfig.from_pretrained(source, **opts)
    except OSError as e:  # not a folder, not in the HF cache, and the Hub not allowed
        if local or not opts["local_files_only"]:
            raise
        raise ConfigError(hub_id_error(cfg.model, "lm.model", cfg.allow_download)) from e
    if cfg.num_layers > 0:
        truncate_config(config, cfg.num_layers)
    with _quiet(cfg.num_layers > 0):  # the skipped deeper layers would be listed as "unexpected" weights
        model = AutoModelForCausalLM.from_pretrained(source, config=config, dtype=DTYPES[cfg.dtype], **opts)
    tokenizer = AutoTokenizer.from_pretrained(source, **opts)
    ensure_pad_token(model, tokenizer)
    return model, tokenizer


@contextmanager
def _quiet(active: bool) -> Iterator[None]:
    """Silence transformers' load report while active (restoring the previous verbosity)."""
    from transformers.utils import logging as hf_logging

    old = hf_logging.get_verbosity()
    if active:
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(old)


def truncate_config(config, num_layers: int) -> None:
    """Set the (text) config to ``num_layers`` decoder layers; per-layer lists are cut to match."""
    text = config.get_text_config()
    total = text.num_hidden_layers
    if num_layers > total:
        raise ValueError(f"lm.num_layers={num_layers} but the model has only {total} layers")
    text.num_hidden_layers = num_layers
    if isinstance(getattr(text, "layer_types", None), list):
        text.layer_types = text.layer_types[:num_layers]
    log.info("keeping %d of %d decoder layers", num_layers, total)


def ensure_pad_token(model, tokenizer) -> None:
    """Give the tokenizer a pad token (EOS when it has one) and record its id in the model config."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
            rows = model.get_input_embeddings().weight.shape[0]
            if len(tokenizer) > rows:
                model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
