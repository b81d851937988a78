"""The GRPO learner: ONE process holding the policy, the frozen reference and the optimizer.

Built from the training engine's pieces (:func:`raygen.train.masks.prepare_trainable`, AdamW from
:mod:`raygen.train.engine`, :mod:`raygen.train.checkpoint`'s format); driven by :func:`raygen.rl.loop.run_grpo`,
in the driver or as one Ray actor (:mod:`raygen.rl.remote`).
"""
from __future__ import annotations

import copy
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Sequence

import torch

from raygen.lm.vocab import eos_ids
from raygen.rl.config import RlConfig
from raygen.rl.grpo import completion_logprobs, grpo_loss
from raygen.generation.sync import is_peft_model, merged_state_dict, state_checksum
from raygen.train import checkpoint as ckpt
from raygen.train.checkpoint import save_model_atomic
from raygen.train.engine import adamw
from raygen.train.masks import load_trainable_state, prepare_trainable, trainable_state_dict

log = logging.getLogger("raygen")


class GrpoLearner:
    """Policy + frozen reference + AdamW; GRPO updates, weight export and checkpoints.

    Built from the training engine's pieces (raygen.train): trainable-parameter selection and decay
    groups (:func:`prepare_trainable`: 'full', or 'lora' with the SID embedding/head rows trainable as
    in SFT), the checkpoint format and the atomic model export (:mod:`raygen.train.checkpoint`). What
    is RL's own is the GRPO step: :meth:`train_step`."""

    def __init__(self, model_dir: str, cfg: RlConfig, pad_id: int, work_dir: str, sid_ids: Sequence[int],
                 model_key: str | None = None):
        """``model_dir``: a location (a path, or a URI this process materializes on its node, ``model_key``
        naming its content), so the learner may run as a Ray actor on any node."""
        from transformers import AutoModelForCausalLM

        from raygen.storage import materialize

        self.model_location = (str(model_dir), model_key)
        model_dir = str(materialize(model_dir, model_key))

        self.cfg, self.pad_id = cfg, int(pad_id)
        self.mode, self.sid_ids = ("lora" if cfg.lora else "full"), [int(i) for i in sid_ids]
        asked = cfg.learner_resources.gpus > 0
        want_gpu = asked and torch.cuda.is_available()
        if asked and not want_gpu:
            log.warning("rl.learner_resources.gpus is > 0 but no CUDA device is visible; updating the policy on CPU")
        self.device = torch.device("cuda" if want_gpu else "cpu")
        model_dir = Path(model_dir)
        if (model_dir / "adapter_config.json").exists() and not (model_dir / "config.json").exists():
            # A PEFT (SFT LoRA) folder: merge it into its base, so the RL policy starts from the SFT
            # policy and the actors can load a plain model folder.
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).merge_and_unload()
            self.plain_dir = str(Path(work_dir) / "init_model")
            save_model_atomic(model, Path(self.plain_dir), str(model_dir))
            # A folder on this process's node only: the rollout actors must see work_dir (one node or a
            # shared run folder) in this LoRA case.
            self.model_location = (self.plain_dir, None)
        else:
            model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
            self.plain_dir = str(model_dir)
        # the policy's output distribution: over the SID tokens + EOS (rl.sid_only_head) or the whole vocabulary
        self.eos_ids = eos_ids(str(model_dir), model.config)
        self.head_ids = (torch.tensor(sorted(set(self.sid_ids) | set(self.eos_ids)), dtype=torch.long)
                         if cfg.sid_only_head else None)
        self.reference = None
        if not cfg.lora and cfg.kl_beta > 0:
            self.reference = copy.deepcopy(model).requires_grad_(False).eval().to(self.device)
        torch.manual_seed(cfg.seed)  # LoRA's initial A matrices
        model, groups = prepare_trainable(model, self.mode, self.sid_ids, weight_decay=cfg.weight_decay,
                                          lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                          lora_target_modules=cfg.lora_target_modules)
        # with LoRA the reference is the same model with its adapters (and SID-row deltas) disabled
        self.model = model.to(self.device).eval()  # eval: no dropout, so old/new log-probs agree exactly
        self.params = [p for g in groups for p in g["params"]]
        self.optimizer = adamw(groups, cfg.lr)

    # -- log-probs ---------------------------------------------------------------------------
    def _chunks(self, n: int) -> list[slice]:
        mb = self.cfg.micro_batch
        return [slice(s, min(s + mb, n)) for s in range(0, n, mb)]

    @torch.no_grad()
    def _logprobs(self, prompts, tokens, reference: bool) -> torch.Tensor:
        if reference and self.reference is None and not is_peft_model(self.model):
            raise RuntimeError("no reference model (kl_beta = 0)")
        model = self.reference if (reference and self.reference is not None) else self.model
        ctx = self.model.disable_adapter() if (reference and self.reference is None) else nullcontext()
        with ctx:
            return torch.cat([completion_logprobs(model, prompts[c], tokens[c], self.pad_id, self.head_ids)
                              for c in self._chunks(len(prompts))])

    # -- update ------------------------------------------------------------------------------
    def train_step(self, prompts: list[list[int]], tokens: torch.Tensor, advantages: torch.Tensor,
                   sft_prompts: list[list[int]] | None = None, sft_tokens: torch.Tensor | None = None) -> dict:
        """One GRPO update on N = len(prompts) sequences ``prompt + tokens[i]`` with ``advantages[i]``.

        With ``rl.sft_coef`` > 0 and ``sft_prompts``/``sft_tokens`` (each drawn prompt once, with its target's
        SID tokens) the loss adds ``sft_coef`` x the token-mean cross-entropy of those targets (PPO-ptx)."""
        cfg = self.cfg
        # [N, L] log-probs of the completion tokens only; each distinct prompt in a micro-batch is
        # encoded once (a group's G sequences share it; see completion_logprobs)
        tokens = tokens.long().to(self.device)
        cmask = torch.ones(tokens.shape, dtype=torch.long, device=self.device)
        adv = advantages.to(self.device, torch.float32)
        n = len(prompts)
        use_sft = cfg.sft_coef > 0 and sft_prompts is not None and sft_tokens is not None and len(sft_prompts) > 0
        rows_p, rows_t = list(prompts), tokens
        if use_sft:  # the targets ride along: a prompt's target row sits next to its group, so shares its encoding
            rows_p, rows_t = rows_p + list(sft_prompts), torch.cat([tokens, sft_tokens.long().to(self.device)])
        first: dict[tuple, int] = {}
        order = torch.as_tensor(sorted(range(len(rows_p)), key=lambda i: (first.setdefault(tuple(rows_p[i]), i), i)),
                                dtype=torch.long)
        # With one optimizer step per batch the rollout policy IS the current policy, so old_logp is
        # the update pass's own log-probs, detached (ratio == 1): saves a full forward pass.
        old = None if cfg.inner_epochs == 1 else self._logprobs(prompts, tokens, reference=False)
        ref = self._logprobs(prompts, tokens, reference=True) if cfg.kl_beta > 0 else None
        total_tok = float(cmask.sum())
        sft_tok = float(rows_t[n:].numel())
        stats: dict[str, float] = {}
        for _ in range(cfg.inner_epochs):
            self.optimizer.zero_grad(set_to_none=True)
            acc = {"loss": 0.0}
            for c in self._chunks(len(rows_p)):
                idx = order[c]
                logp = completion_logprobs(self.model, [rows_p[i] for i in idx.tolist()], rows_t[idx], self.pad_id,
                                           self.head_ids)
                is_g = idx < n
                loss = logp.new_zeros(())
                if bool(is_g.any()):
                    gi, lg = idx[is_g], logp[is_g]
                    part, st = grpo_loss(lg, lg.detach() if old is None else old[gi], None if ref is None else ref[gi],
                                         adv[gi], cmask[gi], cfg.clip_eps, cfg.kl_beta)
                    w = float(cmask[gi].sum()) / total_tok
                    loss = loss + part * w
                    acc["loss"] += float(part.detach()) * w
                    for k, v in st.items():
                        acc[k] = acc.get(k, 0.0) + v * w
                if not bool(is_g.all()):
                    nll = -logp[~is_g].sum() / sft_tok
                    loss = loss + cfg.sft_coef * nll
                    acc["sft_nll"] = acc.get("sft_nll", 0.0) + float(nll.detach())
                    acc["loss"] += cfg.sft_coef * float(nll.detach())
                loss.backward()
            if cfg.grad_clip > 0:
                acc["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip))
            self.optimizer.step()
            stats = acc
        return stats

    # -- weights -----------------------------------------------------------------------------
    def weights(self) -> dict[str, torch.Tensor]:
        """Full plain-model weights (LoRA merged) on CPU, for the rollout actors."""
        return merged_state_dict(self.model)

    def weights_ref(self) -> list:
        """``[ObjectRef]`` of :meth:`weights` put from this process (used when the learner is an actor)."""
        import ray

        return [ray.put(self.weights())]

    def checksum(self) -> str:
        return state_checksum(self.weights())

    def actor_model_dir(self) -> str:
        return self.plain_dir

    def actor_model(self) -> tuple[str, str | None]:
        """``(location, key)`` of the plain model the rollout actors start from: the input's location (they
        materialize it on their nodes), or the LoRA-merged folder in ``work_dir``."""
        return self.model_location

    def eos_token_ids(self) -> list[int]:
        """The EOS ids of the policy's SID-only head (what the rollout beam search must normalise over too)."""
        return list(self.eos_ids)

    # -- checkpoints (raygen.train.checkpoint's format) --------------------------------------------
    def save_checkpoint(self, root: str, step: int, extra: dict) -> str:
        state = trainable_state_dict(self.model, self.mode, self.sid_ids)
        return str(ckpt.save_step(Path(root), step, state, self.optimizer, {"mode": self.mode, **extra},
                                  keep=self.cfg.keep_checkpoints))

    def load_checkpoint(self, path: str) -> dict:
        path = Path(path)
        meta = ckpt.read_meta(path)
        try:
            load_trainable_state(self.model, ckpt.read_trainable(path), self.mode, self.sid_ids)
        except KeyError as e:
            raise ValueError(f"{path}: checkpoint does not match the policy ({e}); was it written with another "
                             f"rl.lora setting (it says mode={meta.get('mode')!r})?") from None
        ckpt.restore_optimizer(path, self.optimizer, device=self.device)
        return meta

    def save_final(self, path: str, tokenizer_dir: str) -> str:
        """``save_pretrained`` of the plain (merged) policy to ``path``; a LoRA adapter also to ``path``/adapter."""
        from transformers import AutoModelForCausalLM

        if is_peft_model(self.model):
            plain = AutoModelForCausalLM.from_pretrained(self.plain_dir, dtype=torch.float32)
            plain.load_state_dict(self.weights(), strict=True)
            save_model_atomic(plain, Path(path), tokenizer_dir)
            self.model.save_pretrained(str(Path(path) / "adapter"))
        else:
            save_model_atomic(self.model, Path(path), tokenizer_dir)
        return path
