"""SID tokens in the LM vocabulary: naming, adding them as single tokens, resizing the embeddings.

An SID token for level ``l`` (0-based) and code ``c`` is ``<{letter}_{c}>`` with letters a, b, c, ...;
an item's SID text is the concatenation of its level tokens, e.g. ``<a_12><b_80><c_7>``.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import torch

SID_RE = re.compile(r"<([a-z])_(\d+)>")


def sid_token(level: int, code: int) -> str:
    """Token string of ``code`` at ``level`` (0-based): ``sid_token(1, 80) == '<b_80>'``."""
    if not 0 <= level < 26:
        raise ValueError(f"SID level must be in 0..25, got {level}")
    return f"<{chr(ord('a') + level)}_{int(code)}>"


def sid_text(codes: Sequence[int]) -> str:
    """An item's SID text: ``sid_text([12, 80, 7]) == '<a_12><b_80><c_7>'``."""
    return "".join(sid_token(level, c) for level, c in enumerate(codes))


def parse_sid(text: str) -> list[int] | None:
    """Codes of a well-formed SID text (levels a, b, c, ... in order, nothing else but spaces), else None."""
    codes, pos = [], 0
    stripped = text.strip()
    for m in SID_RE.finditer(stripped):
        if m.start() != pos or ord(m.group(1)) - ord("a") != len(codes):
            return None
        codes.append(int(m.group(2)))
        pos = m.end()
    return codes if codes and pos == len(stripped) else None


def sid_token_ids(tokenizer, tokens: Sequence[str]) -> torch.LongTensor:
    """Ids of SID ``tokens``; ValueError if one of them is not a single token of ``tokenizer``."""
    if not tokens:
        return torch.zeros(0, dtype=torch.long)
    encoded = tokenizer(list(tokens), add_special_tokens=False)["input_ids"]
    bad = [t for t, ids in zip(tokens, encoded) if len(ids) != 1]
    if bad:
        raise ValueError(f"{len(bad)} SID token(s) are not single tokens of the tokenizer, e.g. {bad[:5]}; "
                         "call add_sid_tokens first")
    return torch.tensor([ids[0] for ids in encoded], dtype=torch.long)


def sid_matrix(tokenizer, codes: np.ndarray) -> torch.LongTensor:
    """Token ids ``[n_items, L]`` of an integer code matrix ``[n_items, L]`` (column = level)."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be a 2-D [n_items, levels] array, got shape {codes.shape}")
    out = torch.empty(codes.shape, dtype=torch.long)
    for level in range(codes.shape[1]):
        uniq, inv = np.unique(codes[:, level], return_inverse=True)
        ids = sid_token_ids(tokenizer, [sid_token(level, c) for c in uniq])
        out[:, level] = ids[torch.from_numpy(inv.reshape(-1))]
    return out


def embedding_matrices(model) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(input embedding weight, output head weight or None when tied/absent)``."""
    inp = model.get_input_embeddings().weight
    out_mod = model.get_output_embeddings()
    if out_mod is None or out_mod.weight.data_ptr() == inp.data_ptr():
        return inp, None
    return inp, out_mod.weight


def base_rows(tokenizer, sid_ids: torch.Tensor, n_rows: int | None = None) -> torch.LongTensor:
    """Ids of the pretrained vocabulary: tokenizer ids (below ``n_rows``) that are not SID tokens."""
    n = len(tokenizer) if n_rows is None else min(len(tokenizer), n_rows)
    keep = torch.ones(n, dtype=torch.bool)
    sid = sid_ids[sid_ids < n]
    keep[sid] = False
    return torch.nonzero(keep).flatten()


def add_sid_tokens(model, tokenizer, tokens: Sequence[str]) -> torch.LongTensor:
    """Add ``tokens`` to ``tokenizer`` as single added tokens and grow the model's embeddings to match.

    Tokens are added as non-special ``AddedToken``s (``normalized=False``): the tokenizer splits them
    out of any text as one id each, and ``decode(..., skip_special_tokens=True)`` keeps them, which
    generation needs. The input embeddings and the output head are resized together
    (``resize_token_embeddings`` re-ties a tied head, so it stays one matrix); the new rows of each
    matrix start at the mean of that matrix's pretrained rows, so the model is sane before
    :func:`raygen.lm.init.init_sid_rows` sets them properly. Returns the tokens' ids in order.
    Calling it again with the same tokens adds nothing and returns the same ids.
    """
    from transformers import AddedToken

    tokens = list(tokens)
    if len(set(tokens)) != len(tokens):
        raise ValueError("SID tokens must be unique")
    old_len = len(tokenizer)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in tokens])
    ids = sid_token_ids(tokenizer, tokens)
    inp, _ = embedding_matrices(model)
    old_rows = inp.shape[0]
    if len(tokenizer) > old_rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    fresh = ids[ids >= old_len]  # rows that held no real token before (new, or old vocab padding)
    if len(fresh):
        base = base_rows(tokenizer, ids, n_rows=old_len)
        with torch.no_grad():
            for w in embedding_matrices(model):
                if w is not None:
                    w[fresh] = w[base].float().mean(0).to(w.dtype)
    return ids


def pad_id_of(tokenizer) -> int:
    """The id padded positions get (they are masked out, so any real id works): the tokenizer's pad
    token, else its EOS. The one padding rule of training, evaluation, RL and recommend."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def config_pad_id(config) -> int:
    """:func:`pad_id_of` from a model config (object or ``config.json`` dict) where no tokenizer is at
    hand: pad, else EOS, else BOS token id (the first of a list), else 0."""
    for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
        v = config.get(key) if isinstance(config, dict) else getattr(config, key, None)
        v = v[0] if isinstance(v, (list, tuple)) and v else v
        if isinstance(v, int):
            return v
    return 0


def eos_ids(model_dir, config) -> list[int]:
    """EOS ids of the model config and of the tokenizer in ``model_dir`` (answers end with the tokenizer's
    EOS): the extra tokens of a SID-only head, in SFT (``sft.sid_only_head``) and in RL alike."""
    ids = config.eos_token_id if isinstance(config.eos_token_id, (list, tuple)) else [config.eos_token_id]
    from raygen.train.checkpoint import has_tokenizer

    if has_tokenizer(model_dir):
        from transformers import AutoTokenizer

        ids = [*ids, AutoTokenizer.from_pretrained(model_dir).eos_token_id]
    return sorted({int(i) for i in ids if i is not None})
