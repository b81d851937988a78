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

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from raygen.generation.trie import SidTrie

NEG_INF = float("-inf")


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
                            eos_id: int | list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
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
    n = len(prompt_ids)
    items = torch.full((n, beam_width), -1, dtype=torch.long)
    scores = torch.full((n, beam_width), NEG_INF)
    order = sorted(range(n), key=lambda i: len(prompt_ids[i])) if sort_by_length else list(range(n))
    was_training = model.training
    model.eval()
    try:
        for s in range(0, n, batch_size):
            idx = order[s:s + batch_size]
            it, sc = _search_batch(model, [list(prompt_ids[i]) for i in idx], trie, beam_width, pad_id,
                                   autocast_dtype, head)
            items[idx], scores[idx] = it.cpu(), sc.cpu()
    finally:
        model.train(was_training)
    return items, scores
