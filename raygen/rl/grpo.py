"""GRPO math: group-normalised advantages, the clipped objective with a k3 KL penalty, log-probs.

Pure torch, no Ray. For completion token t of sequence i (``mask[i, t] = 1``)::

    ratio      = exp(logp - old_logp)
    pg         = -min(ratio * A_i, clip(ratio, 1 - eps, 1 + eps) * A_i)        # PPO-clip
    kl (k3)    = exp(ref_logp - logp) - (ref_logp - logp) - 1                  # >= 0, unbiased for KL(pi||ref)
    loss       = sum(mask * (pg + beta * kl)) / sum(mask)                      # masked token mean

Every SID completion has the same length L, so this token mean equals GRPO's mean over sequences
of per-sequence token means (and DAPO's token-level mean): the normalisations coincide here.
"""
from __future__ import annotations

import torch

from raygen.generation.beam import left_pad

__all__ = ["group_advantages", "grpo_loss", "completion_logprobs", "sequence_logprobs", "build_sequences"]


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """``(r - mean_g) / (std_g + eps)`` per group (row) of ``rewards`` [B, G].

    ``std_g`` is the sample standard deviation (Bessel-corrected, as TRL's GRPO). A group whose
    rewards are all equal carries no learning signal and gets exactly 0 (not 0/eps noise).
    """
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [B, G] with G >= 2, got {tuple(rewards.shape)}")
    r = rewards.double()
    mean = r.mean(dim=1, keepdim=True)
    std = r.std(dim=1, keepdim=True)
    adv = (r - mean) / (std + eps)
    constant = (r == r[:, :1]).all(dim=1, keepdim=True)
    return torch.where(constant, torch.zeros_like(adv), adv).to(rewards.dtype if rewards.is_floating_point()
                                                                  else torch.float32)


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None, advantages: torch.Tensor,
              mask: torch.Tensor, clip_eps: float, beta: float) -> tuple[torch.Tensor, dict]:
    """Clipped GRPO loss (see module doc) and detached statistics.

    Args:
        logp: [N, T] log-probabilities of the sampled tokens under the current policy (with grad).
        old_logp: [N, T] the same under the policy that generated the rollouts (no grad).
        ref_logp: [N, T] the same under the frozen reference policy, or None when ``beta == 0``.
        advantages: [N] one advantage per sequence (broadcast over its tokens).
        mask: [N, T] 1 on completion tokens, 0 elsewhere (prompt, padding).
    Returns:
        ``(loss, stats)`` with stats ``pg_loss``, ``kl``, ``clip_frac``, ``ratio_mean`` (floats).
    """
    mask = mask.to(logp.dtype)
    n_tok = mask.sum().clamp_min(1.0)
    adv = advantages.to(logp.dtype)[:, None]
    ratio = torch.exp(logp - old_logp.detach())
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    pg = -torch.minimum(ratio * adv, clipped * adv)
    per_token = pg
    if beta != 0.0 or ref_logp is not None:
        if ref_logp is None:
            raise ValueError("beta > 0 needs ref_logp")
        d = ref_logp.detach() - logp
        kl = torch.exp(d) - d - 1.0
        per_token = pg + beta * kl
    else:
        kl = torch.zeros_like(logp)
    loss = (per_token * mask).sum() / n_tok
    with torch.no_grad():
        is_clipped = ((ratio - clipped).abs() > 0) & (mask > 0)
        stats = {
            "pg_loss": float((pg * mask).sum() / n_tok),
            "kl": float((kl * mask).sum() / n_tok),
            "clip_frac": float(is_clipped.sum() / n_tok),
            "ratio_mean": float((ratio * mask).sum() / n_tok),
        }
    return loss, stats


def build_sequences(prompts: list[list[int]], completions: torch.Tensor, pad_id: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompts (left-padded) followed by their completions [N, L]: ``(ids, attention, completion_mask)``.

    All completions have the same length, so they occupy the last L columns of every row.
    """
    if len(prompts) != completions.shape[0]:
        raise ValueError(f"{len(prompts)} prompts but {completions.shape[0]} completions")
    p_ids, p_att = left_pad(prompts, pad_id)
    n, length = completions.shape
    ids = torch.cat([p_ids, completions.long()], dim=1)
    att = torch.cat([p_att, torch.ones((n, length), dtype=torch.long)], dim=1)
    cmask = torch.cat([torch.zeros_like(p_att), torch.ones((n, length), dtype=torch.long)], dim=1)
    return ids, att, cmask


def head_positions(head_ids: torch.Tensor, tokens: torch.Tensor, checked: torch.Tensor) -> torch.Tensor:
    """Index of each token id in ``head_ids`` (-1 where absent); ValueError if a ``checked`` token is absent."""
    lut = torch.full((int(max(int(head_ids.max()), int(tokens.max()))) + 1,), -1, dtype=torch.long,
                     device=tokens.device)
    lut[head_ids] = torch.arange(len(head_ids), device=tokens.device)
    local = lut[tokens]
    bad = (local < 0) & checked
    if bool(bad.any()):
        raise ValueError(f"sid-only log-probs: completion token ids {tokens[bad].unique()[:10].tolist()} are "
                         "not in head_ids (the SID tokens + EOS)")
    return local


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      completion_mask: torch.Tensor, head_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token log-probabilities [N, T] of ``input_ids`` under ``model``, zero outside ``completion_mask``.

    ``out[i, t] = log p(input_ids[i, t] | input_ids[i, :t])`` for completion tokens. Position ids
    follow the attention mask, so a left-padded row scores exactly like the unpadded one. Only the
    logits needed for the completion are computed (``logits_to_keep``), which keeps the [N, T, V]
    logits tensor down to [N, L+1, V].

    ``head_ids`` (sorted token ids, e.g. the SID tokens + EOS): the distribution is the softmax over
    those tokens only, as ``sft.sid_only_head`` trained the model and the ``sid_only`` beam search scores
    it; every completion token must be one of them (ValueError otherwise).
    """
    cols = completion_mask.any(dim=0).nonzero()
    if len(cols) == 0:
        return torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    first = int(cols[0])
    if first == 0:
        raise ValueError("a completion token at position 0 has no context to be predicted from")
    seq_len = input_ids.shape[1]
    keep = seq_len - first + 1                             # logits at positions first-1 .. T-1
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_(min=0)
    targets = input_ids[:, first:]
    if head_ids is None:
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                    logits_to_keep=keep, use_cache=False)
        logits = out.logits[:, :-1, :].float()             # predicts positions first .. T-1
    else:
        from raygen.train.loss import sid_head_weight  # the head rows, LoRA/trainable-token deltas included

        head_ids = head_ids.to(input_ids.device)
        local = head_positions(head_ids, targets, completion_mask[:, first:].bool())
        hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                     use_cache=False)[0][:, first - 1:-1]
        logits = (hidden @ sid_head_weight(model, head_ids).T.to(hidden.dtype)).float()
        targets = local.clamp_min(0)
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    full = torch.zeros(input_ids.shape, dtype=logp.dtype, device=logp.device)
    full[:, first:] = logp
    return full * completion_mask.to(full.dtype)


def completion_logprobs(model, prompts: list[list[int]], completions: torch.Tensor, pad_id: int,
                        head_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token log-probabilities [N, L] of ``completions[i]`` after ``prompts[i]`` under ``model``.

    The same quantity as :func:`sequence_logprobs` over :func:`build_sequences` (restricted to the
    completion columns), computed with each distinct prompt encoded once: a GRPO group is one prompt
    with G completions of a few SID tokens, so encoding the prompt G times (what a plain
    ``model(prompt + completion)`` batch does, and TRL's GRPO trainer) spends most of the update's
    compute on identical work. The prompts' KV cache is indexed out to the N rows (differentiable,
    so gradients reach the prompt positions as before), and the completions run on top of it.

    ``head_ids``: softmax over those token ids only (see :func:`sequence_logprobs`).
    """
    from transformers import DynamicCache

    n, length = completions.shape
    if len(prompts) != n:
        raise ValueError(f"{len(prompts)} prompts but {n} completions")
    device = completions.device
    distinct: dict[tuple, int] = {}
    row_of = torch.as_tensor([distinct.setdefault(tuple(p), len(distinct)) for p in prompts], device=device)
    if any(len(p) == 0 for p in distinct):
        raise ValueError("an empty prompt leaves the first completion token without context")
    ids, att = left_pad([list(p) for p in distinct], pad_id, device)
    pos = (att.cumsum(-1) - 1).clamp_(min=0)
    targets = completions.long()
    weight = None
    if head_ids is not None:
        from raygen.train.loss import sid_head_weight  # the head rows, LoRA/trainable-token deltas included

        head_ids = head_ids.to(device)
        targets = head_positions(head_ids, targets, torch.ones_like(targets, dtype=torch.bool))
        weight = sid_head_weight(model, head_ids)

    def logits(input_ids, mask, position_ids, cache, keep: int) -> torch.Tensor:
        if weight is None:
            out = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, past_key_values=cache,
                        use_cache=True, logits_to_keep=keep)
            return out.logits[:, -keep:].float()
        hidden = model.get_decoder()(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                                     past_key_values=cache, use_cache=True)[0][:, -keep:]
        return (hidden @ weight.T.to(hidden.dtype)).float()

    cache = DynamicCache(config=model.config)
    parts = [logits(ids, att, pos, cache, 1)[row_of]]            # predicts completion token 0
    if length > 1:
        cache.reorder_cache(row_of)                                 # [n_distinct, ...] -> [N, ...]
        mask = torch.cat([att[row_of], att.new_ones((n, length - 1))], dim=1)
        step = pos[row_of, -1:] + 1 + torch.arange(length - 1, device=device)
        parts.append(logits(completions[:, :-1].long(), mask, step, cache, length - 1))
    return torch.log_softmax(torch.cat(parts, dim=1), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
