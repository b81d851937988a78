"""The training loss: :class:`LossModule` wraps a causal LM and returns the answer-token loss.

Three ways to get logits: ``"all"`` (plain transformers: ``lm(..., labels=...)``, logits at every position),
``"answer"`` (backbone hidden states, then the head only at positions that have a target: same loss, far less
head work and no ``[B, L, V]`` logits tensor) and ``"sid"`` (head restricted to the SID rows:
``logits = h @ W[sid_ids + eos].T``; the softmax runs over SID tokens and EOS only, so it is only valid, and
checked, when every target is one of them: the next-item task). It equals the full-head loss with every other
logit at -inf. All three average the loss over target tokens.
"""
from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from raygen.train.collate import IGNORE_INDEX
from raygen.train.masks import as_ids

Logits = Literal["all", "answer", "sid"]


def sid_head_weight(lm: nn.Module, sid_ids: torch.Tensor) -> torch.Tensor:
    """Rows ``sid_ids`` of the effective output-head weight, differentiable ([n_sid, D]).

    Handles a PEFT ``TrainableTokensWrapper`` head (LoRA mode): its SID rows live in the adapter's
    ``trainable_tokens_delta`` and replace the base rows at forward time.
    """
    head = lm.get_output_embeddings()
    adapter = getattr(head, "token_adapter", None)
    if adapter is None:
        return head.weight[sid_ids.to(head.weight.device)]
    active = [a for a in adapter.active_adapters if a in adapter.token_indices]
    if adapter.merged or adapter.disable_adapters or not active:
        return adapter.get_base_layer().weight[sid_ids]
    if len(active) == 1:
        pos = {t: i for i, t in enumerate(adapter.token_indices[active[0]])}
        if all(int(t) in pos for t in sid_ids):
            delta = adapter.trainable_tokens_delta[active[0]]
            return delta[torch.tensor([pos[int(t)] for t in sid_ids], device=delta.device)]
    return adapter.get_merged_weights(active)[sid_ids]


class LossModule(nn.Module):
    """``forward(input_ids, labels, attention_mask=None, position_ids=None) -> {"loss", "n_target"}``.

    ``logits="sid"`` restricts the head to ``sid_ids`` plus ``extra_ids`` (pass the EOS id(s): answers
    end with EOS); every target must be one of them (checked).

    Wrap this (not the bare LM) with DeepSpeed/DDP so the loss is computed inside their forward.
    ``bf16=True`` runs the LM under bf16 autocast (the loss itself is computed in fp32).
    """

    def __init__(self, lm: nn.Module, logits: Logits = "answer", sid_ids: Sequence[int] | torch.Tensor | None = None,
                 bf16: bool = False, extra_ids: Sequence[int] = ()):
        super().__init__()
        if logits not in ("all", "answer", "sid"):
            raise ValueError(f"logits must be 'all', 'answer' or 'sid', got {logits!r}")
        self.lm = lm
        self.logits = logits
        self.bf16 = bf16
        if logits == "sid":
            if sid_ids is None:
                raise ValueError("logits='sid' needs sid_ids")
            # The restricted head: SID tokens plus ``extra_ids`` (EOS: encoded answers end with it).
            ids = as_ids(list(dict.fromkeys([*as_ids(sid_ids).tolist(), *map(int, extra_ids)])))
            lookup = torch.full((int(ids.max()) + 1,), -1, dtype=torch.long)
            lookup[ids] = torch.arange(len(ids))
            self.register_buffer("sid_ids", ids, persistent=False)
            self.register_buffer("sid_lookup", lookup, persistent=False)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, **_: Any) -> dict[str, torch.Tensor]:
        autocast = torch.autocast(input_ids.device.type, dtype=torch.bfloat16, enabled=self.bf16)
        if self.logits == "all":
            with autocast:
                out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              labels=labels, use_cache=False)
            return {"loss": out.loss, "n_target": (labels[:, 1:] != IGNORE_INDEX).sum()}
        if attention_mask is not None and bool((attention_mask[:, :-1] < attention_mask[:, 1:]).any()):
            raise ValueError("LossModule expects right padding (pad_collate); got a mask with pads before tokens")
        # Right padding needs no attention mask: causal attention already keeps every real token from
        # seeing the pads after it, and without a mask SDPA takes its fused causal kernel.
        targets = labels[:, 1:]
        sel = targets != IGNORE_INDEX
        with autocast:
            hidden = self.lm.get_decoder()(input_ids=input_ids, position_ids=position_ids, use_cache=False)[0]
            h = hidden[:, :-1][sel]
            y = targets[sel]
            if self.logits == "sid":
                lut = self.sid_lookup
                local = torch.where(y < lut.numel(), lut[y.clamp(max=lut.numel() - 1)], -1)
                if bool((local < 0).any()):
                    bad = y[local < 0].unique()[:10].tolist()
                    raise ValueError(f"sid_only_head: target token ids {bad} are neither SID tokens nor EOS; "
                                     "use it only for tasks whose answers are SIDs (next-item)")
                y = local
                logits = h @ sid_head_weight(self.lm, self.sid_ids).T
            else:
                logits = self.lm.get_output_embeddings()(h)
        n = sel.sum()
        loss = F.cross_entropy(logits.float(), y, reduction="sum") / n.clamp(min=1)
        return {"loss": loss, "n_target": n}
