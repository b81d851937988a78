"""A small SASRec (Kang & McAuley 2018) baseline in plain torch, trained on CPU in seconds.

Items are row indices ``0..n_items-1`` (map item ids to indices first); index 0 of the
embedding table is padding, so item ``i`` is embedding row ``i + 1``. Sequences are left-padded
to ``max_len`` (most recent item last). Training: every sample ``history + [target]`` is a
sequence; each position predicts the next item with softmax cross-entropy over the full catalog
(item embeddings are shared between input and output). Hand-written because the model is a
few dozen lines of torch and the recommender libraries that ship SASRec pull in heavy stacks.

Given validation rows, training runs to convergence the way RecBole does it (CE loss, validation
every epoch, ``stopping_step`` 10 of at most 300 epochs): full-catalog NDCG@10 on every validation
row after each epoch, the best epoch's weights kept, stop after ``patience`` epochs without a
better value, but never before ``min_epochs`` (an early plateau is not convergence). Without
validation rows it trains exactly ``epochs`` passes.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raygen.eval.config import SASRecConfig
from raygen.eval.metrics import ranking_metrics


class SASRec(nn.Module):
    def __init__(self, n_items: int, cfg: SASRecConfig):
        super().__init__()
        self.n_items, self.cfg = n_items, cfg
        self.item_emb = nn.Embedding(n_items + 1, cfg.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(cfg.hidden, cfg.n_heads, dim_feedforward=cfg.hidden, dropout=cfg.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.hidden)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, T, H] of left-padded index sequences [B, T] (0 = padding)."""
        b, t = seq.shape
        pos = torch.arange(t, device=seq.device)
        x = self.item_emb(seq) * math.sqrt(self.cfg.hidden) + self.pos_emb(pos)[None]
        x = self.drop(x) * (seq > 0)[..., None]
        # Causal, and padding keys hidden -- except each position always sees itself, so that a
        # padded query never has an all-masked row (which would give NaN).
        causal = torch.ones(t, t, dtype=torch.bool, device=seq.device).triu(1)
        pad_key = (seq == 0)[:, None, :] & ~torch.eye(t, dtype=torch.bool, device=seq.device)[None]
        mask = (causal[None] | pad_key).repeat_interleave(self.cfg.n_heads, dim=0)
        return self.norm(self.blocks(x, mask=mask))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Scores over the catalog (padding row excluded) for hidden states [..., H]."""
        return h @ self.item_emb.weight[1:].T


def _pad_sequences(seqs: Sequence[Sequence[int]], max_len: int) -> torch.Tensor:
    """Left-pad/truncate 0-based item index lists to [N, max_len] of embedding rows (index + 1)."""
    out = torch.zeros(len(seqs), max_len, dtype=torch.long)
    for i, s in enumerate(seqs):
        s = list(s)[-max_len:]
        if s:
            out[i, max_len - len(s):] = torch.as_tensor(s, dtype=torch.long) + 1
    return out


def _check_range(seqs: Sequence[Sequence[int]], n_items: int, what: str) -> None:
    for i, s in enumerate(seqs):
        for x in s:
            if not 0 <= int(x) < n_items:
                raise ValueError(f"{what}[{i}] holds item index {x}, outside [0, {n_items})")


VALID_K = 10
"""Early stopping watches NDCG@VALID_K on the validation rows."""


def _valid_ndcg(model: SASRec, histories: Sequence[Sequence[int]], targets: np.ndarray) -> float:
    top = sasrec_rank(model, histories, VALID_K)
    return ranking_metrics(top, targets, ks=(VALID_K,))[f"ndcg@{VALID_K}"]


def fit_sasrec(train_histories: Sequence[Sequence[int]], train_targets: Sequence[int], n_items: int,
               cfg: SASRecConfig | None = None, valid_histories: Sequence[Sequence[int]] | None = None,
               valid_targets: Sequence[int] | None = None) -> SASRec:
    """Train a :class:`SASRec` on (history -> target) samples of 0-based item indices.

    With ``valid_histories``/``valid_targets`` (0-based indices too): early stopping on their
    NDCG@10 (see the module docstring); the returned model holds the best epoch's weights.
    ``model.fit_info`` records ``epochs_run``, ``best_epoch`` (1-based), ``best_valid_ndcg@10``,
    ``stopped_early``, ``valid_rows`` and ``valid_curve`` (valid NDCG@10 after each epoch) (the last four
    None/0/empty without validation rows).
    """
    cfg = cfg or SASRecConfig()
    if len(train_histories) != len(train_targets) or len(train_targets) == 0:
        raise ValueError(f"need as many histories as targets (>0), got {len(train_histories)}, {len(train_targets)}")
    _check_range(train_histories, n_items, "train_histories")
    _check_range([train_targets], n_items, "train_targets")
    if (valid_histories is None) != (valid_targets is None):
        raise ValueError("give both valid_histories and valid_targets, or neither")
    use_valid = valid_histories is not None and len(valid_targets) > 0
    if use_valid:
        if len(valid_histories) != len(valid_targets):
            raise ValueError(f"need as many valid histories as targets, got {len(valid_histories)}, "
                             f"{len(valid_targets)}")
        _check_range(valid_histories, n_items, "valid_histories")
        _check_range([valid_targets], n_items, "valid_targets")
        valid_y = np.asarray(valid_targets, dtype=np.int64)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    full = _pad_sequences([list(h) + [t] for h, t in zip(train_histories, train_targets)], cfg.max_len + 1)
    inputs, labels = full[:, :-1], full[:, 1:] - 1  # label -1 = padding, ignored
    if not cfg.all_positions:
        labels = torch.full_like(labels, -1)
        labels[:, -1] = full[:, -1] - 1
    model = SASRec(n_items, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best, best_epoch, best_state, epoch, curve = -1.0, 0, None, 0, []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        for idx in torch.randperm(len(inputs), generator=gen).split(cfg.batch_size):
            h = model(inputs[idx])
            y = labels[idx]
            keep = y >= 0
            loss = F.cross_entropy(model.logits(h[keep]), y[keep])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if not use_valid:
            continue
        score = _valid_ndcg(model, valid_histories, valid_y)  # eval mode: uses no random numbers
        curve.append(round(float(score), 6))
        if score > best:
            best, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= cfg.patience and epoch >= cfg.min_epochs:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    model.fit_info = {"epochs_run": epoch, "best_epoch": best_epoch if use_valid else None,
                      "best_valid_ndcg@10": best if use_valid else None,
                      "stopped_early": bool(use_valid and epoch < cfg.epochs),
                      "valid_rows": len(valid_targets) if use_valid else 0, "valid_curve": curve}
    return model


@torch.inference_mode()
def sasrec_rank(model: SASRec, histories: Sequence[Sequence[int]], k: int, batch_size: int = 1024) -> np.ndarray:
    """Top-``k`` item indices [N, k] for each history (0-based indices, best first)."""
    _check_range(histories, model.n_items, "histories")
    model.eval()
    seqs = _pad_sequences(histories, model.cfg.max_len)
    out = []
    for s in range(0, len(seqs), batch_size):
        h = model(seqs[s:s + batch_size])[:, -1]
        out.append(model.logits(h).topk(min(k, model.n_items), dim=-1).indices)
    return torch.cat(out).numpy() if out else np.zeros((0, k), dtype=np.int64)
