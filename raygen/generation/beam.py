"""Catalog-constrained beam search over semantic IDs, batched, KV-cached, with tensor masks.

Why hand-written: HF ``generate(prefix_allowed_tokens_fn=...)`` (``PrefixConstrainedLogitsProcessor``)
calls a Python function once per beam per step and builds the mask row by row, and ``generate``
expands every prompt to ``num_beams`` copies *before* the prefill, so the prompt is encoded
``beam_width`` times. Here the prompt is encoded once per row, the KV cache is expanded to the
beams afterwards, and the allowed next tokens of all beams come from one ``searchsorted`` per step
on the catalog's :class:`raygen.generation.trie.SidTrie`.

Scores are sums of the model's full-vocabulary log-probabilities of the emitted tokens (the same
quantity HF beam search ranks by, and the exact log-probability of the SID given the prompt);
disallowed tokens get ``-inf``. With ``beam_width >= n_items`` the search is exhaustive.
"""
from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from raygen.configbase import ConfigError
from raygen.generation.trie import SidTrie

NEG_INF = float("-inf")
MAX_GIB_ENV = "RAYGEN_BEAM_MAX_GIB"
"""Environment variable: GiB one beam search may use (default: 90 % of the GPU's free memory, 80 % of the
machine's available memory on a CPU)."""

log = logging.getLogger("raygen")


class BeamMemoryError(ConfigError):
    """A beam search whose estimated memory exceeds the budget even one prompt row at a time."""


def _model_dims(model) -> tuple[int, int]:
    """``(vocabulary size, KV-cache bytes per token of one sequence)`` of a causal LM."""
    conf = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = conf.num_attention_heads
    kv_heads = getattr(conf, "num_key_value_heads", None) or heads
    head_dim = getattr(conf, "head_dim", None) or conf.hidden_size // heads
    elt = next(model.parameters()).element_size()
    return model.get_output_embeddings().weight.shape[0], 2 * conf.num_hidden_layers * kv_heads * head_dim * elt


def search_bytes(model, beam_width: int, prompt_len: int, n_items: int, n_levels: int) -> int:
    """Estimated peak bytes of one prompt row's search: ``min(beam_width, n_items)`` sequences (a catalog
    fills no more beams), each with a KV cache of ``prompt_len + n_levels`` tokens (counted twice:
    reordering the cache copies it) and three vocabulary-wide float32 rows (logits, log-probabilities,
    candidates)."""
    vocab, kv_per_token = _model_dims(model)
    beams = min(beam_width, n_items)
    return beams * (2 * kv_per_token * (prompt_len + n_levels) + 3 * 4 * vocab)


def _available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (Linux), else free physical pages; None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def memory_budget(device: torch.device) -> tuple[int, str]:
    """``(bytes, where the number comes from)`` one beam search may use on ``device`` (see MAX_GIB_ENV)."""
    env = os.environ.get(MAX_GIB_ENV, "").strip()
    if env:
        try:
            gib = float(env)
        except ValueError:
            raise ConfigError(f"{MAX_GIB_ENV}={env!r}: expected a number of GiB") from None
        return int(gib * 2 ** 30), MAX_GIB_ENV
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.9), "90% of the GPU's free memory"
    avail = _available_bytes()
    return (int(avail * 0.8), "80% of the available memory") if avail else (2 ** 62, "unknown memory")


def _gib(n: int) -> str:
    return f"{n / 2 ** 30:.2f} GiB"


def left_pad(rows: list[list[int]], pad_id: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into ``(ids, attention_mask)`` LongTensors [N, max_len] on ``device``
    (prompts end where generation starts; used by beam search, rollouts and the GRPO update)."""
    if not rows:
        raise ValueError("no rows to pad")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            ids[i, width - len(r):] = torch.as_tensor(list(r), dtype=torch.long)
            mask[i, width - len(r):] = 1
    return ids.to(device), mask.to(device)


def _step_logprobs(model, input_ids, attention_mask, position_ids, cache, autocast_dtype,
                   head: "SidHead | None" = None) -> torch.Tensor:
    """Log-probabilities at the last position: over the full vocabulary, or (``head``) over the SID
    tokens + EOS only, scattered into a vocabulary-wide row that is -inf elsewhere."""
    device = input_ids.device
    ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()
    with ctx:
        if head is None:
            out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        past_key_values=cache, use_cache=True, logits_to_keep=1)
            return torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
        hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                     past_key_values=cache, use_cache=True)[0][:, -1]
        logits = hidden @ head.weight.T.to(hidden.dtype)
    full = torch.full((hidden.shape[0], head.vocab), NEG_INF, device=device)
    full[:, head.ids] = torch.log_softmax(logits.float(), dim=-1)
    return full


@dataclass
class SidHead:
    """The output head restricted to the SID tokens (+ EOS): what a model trained with
    ``sid_only_head`` normalises over, and ~50x less head work than the full vocabulary."""
    ids: torch.Tensor
    weight: torch.Tensor
    vocab: int

    @classmethod
    def build(cls, model, trie: SidTrie, extra_ids=()) -> "SidHead":
        ids = torch.unique(torch.cat([*trie.level_tokens, torch.as_tensor(list(extra_ids), dtype=torch.long,
                                                                          device=trie.keys[0].device)]))
        head = model.get_output_embeddings()
        if getattr(head, "bias", None) is not None:
            raise ValueError("sid_only scoring does not support an output head with a bias")
        return cls(ids=ids, weight=head.weight[ids.to(head.weight.device)].detach(), vocab=head.weight.shape[0])


def _search_batch(model, rows: list[list[int]], trie: SidTrie, beam_width: int, pad_id: int,
                  autocast_dtype, head: SidHead | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    from transformers import DynamicCache

    device = trie.keys[0].device
    n_rows, k = len(rows), beam_width
    ids, mask = left_pad(rows, pad_id, device)
    pos = (mask.cumsum(-1) - 1).clamp_(min=0)
    cache = DynamicCache(config=model.config)
    logp = _step_logprobs(model, ids, mask, pos, cache, autocast_dtype, head)  # [n_rows, V]

    # Beam state, flattened to [n_rows * k]. Before level 0 each row has one live beam (the root).
    prefix = torch.zeros(n_rows * k, dtype=torch.long, device=device)
    score = torch.full((n_rows, k), NEG_INF, device=device)
    score[:, 0] = 0.0
    score = score.view(-1)
    logp = logp.repeat_interleave(k, dim=0)
    cache.batch_repeat_interleave(k)
    mask = mask.repeat_interleave(k, dim=0)
    next_pos = pos[:, -1].repeat_interleave(k, dim=0)[:, None] + 1
    row_base = (torch.arange(n_rows, device=device) * k)[:, None]

    for t in range(trie.n_levels):
        child, valid = trie.children(t, prefix)                              # [n_rows*k, n_codes]
        n_codes = child.shape[1]
        cand = score[:, None] + logp[:, trie.level_tokens[t]]
        cand = cand.masked_fill(~valid, NEG_INF).view(n_rows, k * n_codes)
        # k * n_codes >= k always; when fewer than k candidates are valid the rest come back as
        # -inf ("dead" beams): they stay -inf and are reported as item -1 at the end.
        top_score, top_idx = cand.topk(k, dim=-1)
        origin = (row_base + top_idx // n_codes).view(-1)                   # flat parent beam
        code = (top_idx % n_codes).view(-1)
        prefix = child[origin, code]
        score = top_score.view(-1)
        if t + 1 < trie.n_levels:
            cache.reorder_cache(origin)
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            tok = trie.level_tokens[t][code][:, None]
            logp = _step_logprobs(model, tok, mask, next_pos + t, cache, autocast_dtype, head)

    score = score.view(n_rows, k)
    items = trie.leaf_item[prefix].view(n_rows, k)
    return items.masked_fill(torch.isneginf(score), -1), score


@torch.inference_mode()
def constrained_beam_search(model, prompt_ids: list[list[int]], sid_matrix: torch.Tensor, beam_width: int,
                            pad_id: int, batch_size: int = 16, *, autocast_dtype: torch.dtype | None = None,
                            sort_by_length: bool = True, trie: SidTrie | None = None, sid_only: bool = False,
                            eos_id: int | list[int] | None = None, max_bytes: int | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``beam_width`` catalog items for each prompt by constrained beam search.

    Args:
        model: a causal LM (HF ``*ForCausalLM``) whose vocabulary contains the SID tokens.
        prompt_ids: one token-id list per row; generation starts right after it.
        sid_matrix: LongTensor [n_items, L]; row ``i`` is the SID token ids of item ``i`` (rows distinct).
        beam_width: beams kept per row = number of items returned per row.
        pad_id: token id used for left padding (masked out, any valid id works).
        batch_size: rows per forward pass (each row costs ``beam_width`` sequences while decoding).
        autocast_dtype: e.g. ``torch.bfloat16`` to run the model under autocast (scores stay float32).
        sort_by_length: batch rows of similar prompt length together (less padding); output order is
            always the input order.
        trie: a prebuilt :class:`SidTrie` of ``sid_matrix`` (to reuse across calls).
        sid_only: score with the head restricted to the SID tokens (+ ``eos_id``): log-probabilities
            normalised over those tokens, as a model trained with ``sid_only_head`` was; far less head
            work. Within one beam the ranking of allowed tokens is the same as with the full head.
        max_bytes: memory the search may use (default :func:`memory_budget`). No more beams than the
            catalog has items are kept; fewer rows than ``batch_size`` go into a forward pass when the
            estimate (:func:`search_bytes`) needs it; BeamMemoryError when one row alone does not fit.

    Returns:
        ``(items, scores)``: LongTensor [B, beam_width] of item row indices into ``sid_matrix`` and
        FloatTensor [B, beam_width] of SID log-probabilities, best first. Every item is a catalog
        item by construction; only when the catalog has fewer than ``beam_width`` items are the
        surplus slots ``-1`` with score ``-inf``.
    """
    if beam_width < 1 or batch_size < 1:
        raise ValueError(f"beam_width and batch_size must be >= 1, got {beam_width}, {batch_size}")
    if any(len(r) == 0 for r in prompt_ids):
        raise ValueError("empty prompt: every row needs at least one token (the assistant turn header)")
    device = next(model.parameters()).device
    trie = (trie or SidTrie.build(sid_matrix)).to(device)
    extra = [] if eos_id is None else [eos_id] if isinstance(eos_id, int) else list(eos_id)
    head = SidHead.build(model, trie, extra) if sid_only else None
    n, n_items = len(prompt_ids), len(trie.leaf_item)
    k = min(beam_width, n_items)  # more beams than items stay empty (-1): never searched, never allocated
    budget, source = (max_bytes, "max_bytes") if max_bytes is not None else memory_budget(device)
    budget -= n * beam_width * 12  # the results
    if budget <= 0:
        raise BeamMemoryError(f"beam search: the results of {n} rows x beam_width {beam_width} alone need "
                              f"{_gib(n * beam_width * 12)}, over the budget ({source}): lower the beam width")
    items = torch.full((n, beam_width), -1, dtype=torch.long)
    scores = torch.full((n, beam_width), NEG_INF)
    order = sorted(range(n), key=lambda i: len(prompt_ids[i])) if sort_by_length else list(range(n))
    was_training = model.training
    model.eval()
    try:
        s, warned = 0, False
        while s < n:
            idx = order[s:s + batch_size]
            plen = max(len(prompt_ids[i]) for i in idx)
            per_row = search_bytes(model, k, plen, n_items, trie.n_levels)
            if per_row > budget:
                raise BeamMemoryError(
                    f"beam search: beam_width {beam_width} ({k} beams over {n_items} items) with a {plen}-token "
                    f"prompt needs ~{_gib(per_row)} per prompt row (KV cache and vocabulary-wide log-probabilities), "
                    f"over the budget of {_gib(budget)} ({source}): lower the beam width (eval.beam_width, "
                    f"rl.group_size, valid_beam) or set {MAX_GIB_ENV}")
            if per_row * len(idx) > budget:
                idx = idx[:budget // per_row]
                if not warned:
                    log.warning("beam search: %d rows per forward pass instead of batch_size %d, to stay within "
                                "%s (%s; ~%s per row)", len(idx), batch_size, _gib(budget), source, _gib(per_row))
                    warned = True
            it, sc = _search_batch(model, [list(prompt_ids[i]) for i in idx], trie, k, pad_id, autocast_dtype, head)
            items[idx, :k], scores[idx, :k] = it.cpu(), sc.cpu()
            s += len(idx)
    finally:
        model.train(was_training)
    return items, scores
