"""Generation backends: G catalog-valid candidates per prompt (RL rollouts, evaluation) and new weights.

:class:`RolloutBackend` is the interface the actors of the generation pool (:mod:`raygen.generation.pool`)
wrap. :class:`HFBackend` runs a transformers causal LM (CPU or GPU) with raygen's tensor-masked
constrained decoding; :mod:`raygen.generation.vllm_backend` is the vLLM implementation for GPU clusters.

Modes:

* ``'beam'``: :func:`raygen.generation.beam.constrained_beam_search` with ``beam_width = G``: the G most
  likely distinct catalog items, best first (MiniOneRec's rollout). Deterministic.
* ``'sample'``: G independent samples per prompt, token by token, each level's logits masked to the
  children of the sampled prefix (:class:`raygen.generation.trie.SidTrie`) and divided by ``temperature``.
  Samples are *with* replacement: a group may contain the same item twice (GRPO handles that; the
  ``ranking`` reward gives duplicates the same rank). The prompt is encoded once and its KV cache
  expanded to the G samples.

Scores are sequence log-probabilities: full-vocabulary log-probs for 'beam' (as beam search ranks),
and log-probs of the temperature-scaled, constraint-renormalised distribution actually sampled from
for 'sample'.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from raygen.generation.beam import constrained_beam_search, left_pad
from raygen.generation.trie import SidTrie

__all__ = ["Rollouts", "RolloutBackend", "HFBackend", "constrained_sample", "make_backend"]


@dataclass
class Rollouts:
    """One batch of rollouts."""

    items: torch.Tensor
    """LongTensor [B, G]: catalog row indices of the candidates (-1 = empty slot, beam mode only)."""
    tokens: torch.Tensor
    """LongTensor [B, G, L]: the candidates' SID token ids (the completions to train on)."""
    scores: torch.Tensor
    """FloatTensor [B, G]: sequence log-probabilities of the candidates under the rollout policy."""
    seconds: float = 0.0
    """Wall time of the generation."""

    @staticmethod
    def cat(parts: list["Rollouts"]) -> "Rollouts":
        return Rollouts(torch.cat([p.items for p in parts]), torch.cat([p.tokens for p in parts]),
                        torch.cat([p.scores for p in parts]), max((p.seconds for p in parts), default=0.0))


class RolloutBackend(ABC):
    """Generates constrained rollouts and accepts weight updates from the learner."""

    weights_version: int = 0
    """Version of the weights in use; set by :meth:`load_weights` (the learner's step)."""

    @abstractmethod
    def generate(self, prompt_ids: list[list[int]], group_size: int, mode: str = "beam",
                 temperature: float = 1.0, seed: int | None = None) -> Rollouts:
        """G candidates for each prompt (token-id lists ending where the SID starts)."""

    @abstractmethod
    def load_weights(self, state_dict: dict[str, torch.Tensor], version: int | None = None) -> int:
        """Replace the model weights (full, merged state dict); returns the new ``weights_version``."""

    @abstractmethod
    def checksum(self) -> str:
        """Hash of the current weights (:func:`raygen.generation.sync.state_checksum`), to verify a sync."""


@torch.inference_mode()
def constrained_sample(model, prompt_ids: list[list[int]], trie: SidTrie, group_size: int, pad_id: int,
                       temperature: float = 1.0, batch_size: int = 16, generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``group_size`` catalog items per prompt; returns ``(items [B, G], logprobs [B, G])``."""
    from transformers import DynamicCache

    device = trie.keys[0].device
    n, g = len(prompt_ids), group_size
    items = torch.empty((n, g), dtype=torch.long)
    scores = torch.empty((n, g))
    for s in range(0, n, batch_size):
        rows = [list(p) for p in prompt_ids[s:s + batch_size]]
        ids, att = (t.to(device) for t in left_pad(rows, pad_id))
        pos = (att.cumsum(-1) - 1).clamp_(min=0)
        cache = DynamicCache(config=model.config)
        out = model(input_ids=ids, attention_mask=att, position_ids=pos, past_key_values=cache, use_cache=True,
                    logits_to_keep=1)
        logits = out.logits[:, -1, :].float().repeat_interleave(g, dim=0)          # [b*g, V]
        cache.batch_repeat_interleave(g)
        att = att.repeat_interleave(g, dim=0)
        next_pos = pos[:, -1:].repeat_interleave(g, dim=0) + 1
        prefix = torch.zeros(logits.shape[0], dtype=torch.long, device=device)
        total = torch.zeros(logits.shape[0], device=device)
        for t in range(trie.n_levels):
            child, valid = trie.children(t, prefix)                               # [b*g, n_codes]
            lvl = logits[:, trie.level_tokens[t]] / temperature
            logp = torch.log_softmax(lvl.masked_fill(~valid, float("-inf")), dim=-1)
            code = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1)
            total += logp.gather(1, code[:, None]).squeeze(1)
            prefix = child.gather(1, code[:, None]).squeeze(1)
            if t + 1 < trie.n_levels:
                att = torch.cat([att, att.new_ones((att.shape[0], 1))], dim=1)
                tok = trie.level_tokens[t][code][:, None]
                out = model(input_ids=tok, attention_mask=att, position_ids=next_pos + t, past_key_values=cache,
                            use_cache=True, logits_to_keep=1)
                logits = out.logits[:, -1, :].float()
        b = len(rows)
        items[s:s + b] = trie.leaf_item[prefix].view(b, g).cpu()
        scores[s:s + b] = total.view(b, g).cpu()
    return items, scores


class HFBackend(RolloutBackend):
    """transformers model from a ``save_pretrained`` folder + constrained beam search / sampling."""

    def __init__(self, model_dir: str, sid_matrix, pad_id: int, batch_size: int = 16, device: str | None = None,
                 dtype: str = "float32", autocast_dtype: str | None = None, trust_remote_code: bool = False,
                 bf16: bool | str | None = None, sid_only: bool = False, eos_id: int | list[int] | None = None):
        """``bf16`` ('auto', True, False) overrides ``autocast_dtype``, resolved for this process's device;
        ``sid_only``/``eos_id``: beam search scores with the head restricted to SID tokens (+ EOS), as the
        model was trained with ``sid_only_head``."""
        from transformers import AutoModelForCausalLM

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if bf16 is not None:
            from raygen.precision import resolve_bf16

            use, reason = resolve_bf16(bf16, self.device.type)
            autocast_dtype = "bfloat16" if use else None
        else:
            reason = f"autocast_dtype={autocast_dtype!r} given"
        self.precision = {"bf16": autocast_dtype == "bfloat16", "reason": reason}
        self.model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code).to(self.device).eval()
        self.model.requires_grad_(False)
        self.sid_matrix = torch.as_tensor(sid_matrix, dtype=torch.long).cpu()
        self.trie = SidTrie.build(self.sid_matrix).to(self.device)
        self.pad_id, self.batch_size = int(pad_id), int(batch_size)
        self.autocast_dtype = getattr(torch, autocast_dtype) if autocast_dtype else None
        self.sid_only, self.eos_id = sid_only, eos_id
        self.weights_version = 0

    def precision_info(self) -> dict:
        """``{"bf16": bool, "reason": str}``: the precision generation runs in."""
        return dict(self.precision)

    def generate(self, prompt_ids, group_size, mode="beam", temperature=1.0, seed=None) -> Rollouts:
        g = int(group_size)
        if not prompt_ids:
            return Rollouts(torch.zeros((0, g), dtype=torch.long),
                            torch.zeros((0, g, self.sid_matrix.shape[1]), dtype=torch.long), torch.zeros((0, g)))
        t0 = time.perf_counter()
        if mode == "beam":
            items, scores = constrained_beam_search(self.model, prompt_ids, self.sid_matrix, beam_width=g,
                                                    pad_id=self.pad_id, batch_size=self.batch_size,
                                                    autocast_dtype=self.autocast_dtype, trie=self.trie,
                                                    sid_only=self.sid_only, eos_id=self.eos_id)
        elif mode == "sample":
            gen = torch.Generator(device=self.device)
            gen.manual_seed(0 if seed is None else int(seed))
            ctx = (torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype
                   else torch.autocast(self.device.type, enabled=False))
            with ctx:
                items, scores = constrained_sample(self.model, prompt_ids, self.trie, g, self.pad_id, temperature,
                                                   self.batch_size, gen)
        else:
            raise ValueError(f"rollout mode must be 'beam' or 'sample', got {mode!r}")
        tokens = self.sid_matrix[items.clamp_min(0)]
        return Rollouts(items, tokens, scores.float(), time.perf_counter() - t0)

    def load_weights(self, state_dict, version=None) -> int:
        missing, unexpected = self.model.load_state_dict(state_dict, strict=False)
        tied = set(getattr(self.model, "_tied_weights_keys", None) or [])
        missing = [m for m in missing if m not in tied and not (m == "lm_head.weight" and
                                                                   getattr(self.model.config, "tie_word_embeddings",
                                                                           False))]
        if missing or unexpected:
            raise KeyError(f"weight sync mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
        self.weights_version = self.weights_version + 1 if version is None else int(version)
        return self.weights_version

    def checksum(self) -> str:
        from raygen.generation.sync import state_checksum

        return state_checksum(self.model.state_dict())


def make_backend(kind: str, model_dir: str, sid_matrix, pad_id: int, **kwargs) -> RolloutBackend:
    """Backend by name: 'hf' (:class:`HFBackend`) or 'vllm'
    (:class:`raygen.generation.vllm_backend.VLLMBackend`)."""
    if kind == "hf":
        return HFBackend(model_dir, sid_matrix, pad_id, **kwargs)
    if kind == "vllm":
        from raygen.generation.vllm_backend import VLLMBackend

        return VLLMBackend(model_dir, sid_matrix, pad_id, **kwargs)
    raise ValueError(f"rollout backend must be 'hf' or 'vllm', got {kind!r}")
