"""The GRPO loop: rollouts on Ray actors -> rewards -> advantages -> policy update -> weight sync.

Design (simplest robust one): the learner is ONE process holding the policy, the frozen reference
and the optimizer: by default the driver itself (``learner_resources.count = 0``), or a single Ray actor
with a GPU (``learner_resources.count = 1``, for clusters whose head node has none). The expensive,
embarrassingly parallel part, generation, is what is spread over ``rollout_resources.count`` Ray actors;
the update of a 135M-1B policy on B*G short sequences fits one device. A multi-worker DeepSpeed learner
would add an all-gather of ZeRO shards before every sync and is not implemented (see
``RlConfig.learner_resources``).

One step::

    prompts (B, from a seeded per-epoch permutation) --pool.generate--> items [B, G], tokens [B, G, L]
    rewards [B, G] = combine(cfg.rewards)(items, targets, ctx)
    advantages     = group_advantages(rewards)
    learner.train_step: ref (and, if inner_epochs > 1, old) log-probs without grad, then
                        inner_epochs x (micro-batched grpo_loss [+ sft_coef x target NLL], AdamW step)
    pool.broadcast_weights(merged policy weights, version = step)         # one ray.put

Rollouts come from exactly the weights of the previous update (the sync is synchronous), so with
``inner_epochs = 1`` the update is on-policy and ``old_logp`` equals the learner's own log-probs. In
'beam' mode the candidates are the policy's top-G rather than samples (MiniOneRec), so the objective
is the usual GRPO surrogate applied to beam candidates, not an unbiased policy gradient.

Code layout: :func:`run_grpo` is a short loop over :func:`grpo_step` (rollout -> reward -> update ->
sync), periodic evaluation and checkpoints; the Ray plumbing (learner actor, pool, sync) is
:mod:`raygen.rl.remote`; the learner (:mod:`raygen.rl.learner`) is built from the training engine's pieces.

Checkpoints (``out_dir/checkpoints/step_NNNNNNN`` or ``checkpoint_dir``, in
:mod:`raygen.train.checkpoint`'s format: trainable parameters as safetensors, AdamW state,
``state.json`` with the metrics so far) are written atomically every ``checkpoint_every`` steps; a
rerun resumes from the latest one and first pushes the resumed weights to the actors. The final policy (LoRA merged) is
saved with ``save_pretrained`` to ``out_dir/model``; per-step metrics go to ``out_dir/metrics.jsonl``.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from raygen.io import atomic_path, write_json
from raygen.lm.vocab import config_pad_id
from raygen.rl.config import RlConfig
from raygen.rl.grpo import group_advantages
from raygen.rl.rewards import RewardContext, combine
from raygen.generation.backends import Rollouts
from raygen.rl.learner import GrpoLearner
from raygen.train import checkpoint as ckpt

log = logging.getLogger("raygen")

__all__ = ["GrpoLearner", "run_grpo", "batch_indices", "latest_checkpoint"]


def batch_indices(n: int, batch: int, step: int, seed: int) -> np.ndarray:
    """Prompt indices of RL step ``step`` (0-based): consecutive slices of per-epoch seeded permutations.

    A pure function of its arguments, so a resumed run sees exactly the prompts it would have seen.
    """
    out = np.empty(batch, dtype=np.int64)
    for j in range(batch):
        q = step * batch + j
        epoch, pos = divmod(q, n)
        out[j] = np.random.default_rng([seed, epoch]).permutation(n)[pos]
    return out


def latest_checkpoint(root: Path) -> Path | None:
    """The complete checkpoint folder with the highest step under ``root``, or None."""
    return ckpt.latest_step(Path(root))


def _check_inputs(prompts, targets, sid_matrix, item_embeddings, cfg: RlConfig) -> None:
    if len(prompts) == 0 or len(prompts) != len(targets):
        raise ValueError(f"need one target per prompt and at least one prompt, got {len(prompts)} prompts "
                         f"and {len(targets)} targets")
    empty = [i for i, p in enumerate(prompts) if len(p) == 0]
    if empty:
        raise ValueError(f"prompt {empty[0]} is empty ({len(empty)} empty prompts); every prompt needs tokens")
    n_items = sid_matrix.shape[0]
    bad = [i for i, t in enumerate(targets) if not 0 <= int(t) < n_items]
    if bad:
        raise ValueError(f"target of prompt {bad[0]} is {int(targets[bad[0]])}, outside the catalog of "
                         f"{n_items} items ({len(bad)} such rows)")
    if cfg.rollout_mode == "beam" and n_items < cfg.group_size:
        raise ValueError(f"beam rollouts need at least group_size={cfg.group_size} catalog items, got {n_items}")
    if cfg.rewards.get("semantic", 0) != 0:
        if item_embeddings is None:
            raise ValueError("rl.rewards.semantic > 0 needs item_embeddings (corpus stage embeddings)")
        if item_embeddings.shape[0] != n_items:
            raise ValueError(f"item_embeddings has {item_embeddings.shape[0]} rows but the catalog has {n_items}")


def run_grpo(model_dir: str, prompts: Sequence[Sequence[int]], targets: Sequence[int], sid_matrix,
             item_embeddings, cfg: RlConfig, out_dir: str, *, pad_id: int | None = None,
             eval_prompts: Sequence[Sequence[int]] | None = None, eval_targets: Sequence[int] | None = None,
             backend_kwargs: dict | None = None, verify_sync: bool = False,
             checkpoint_dir: str | None = None, model_location: tuple[str, str | None] | None = None
             ) -> dict[str, Any]:
    """GRPO-refine the causal LM in ``model_dir`` (see module doc); returns summary metrics.

    Args:
        model_dir: ``save_pretrained`` folder of the SFT policy (plain model or PEFT adapter).
        prompts: encoded prompts (token-id lists ending where the target SID starts).
        targets: catalog row index (into ``sid_matrix``) of each prompt's true next item.
        sid_matrix: [n_items, L] SID token ids of the catalog, one distinct row per item.
        item_embeddings: [n_items, D] item embeddings for the 'semantic' reward, or None.
        cfg: the RL config; out_dir: where checkpoints, metrics.jsonl and ``model/`` go.
        pad_id: padding token id (default: the model config's pad/eos id).
        eval_prompts, eval_targets: held-out rows for HR/NDCG@eval_beam every ``eval_every`` steps.
        backend_kwargs: extra keyword arguments of the rollout backend (e.g. ``dtype``, ``autocast_dtype``).
        checkpoint_dir: where checkpoints live (default ``out_dir/checkpoints``); a pipeline stage passes a
            folder outside its temporary output folder so a crashed run can resume.
        verify_sync: also return ``learner_checksum`` and every actor's ``actor_checksums`` (a SHA-256 of
            all weights) after the last sync, to check the actors hold exactly the trained policy.
        model_location: ``(location, key)`` of the same model for Ray actors (the learner actor and the
            rollout actors materialize it on their nodes); default ``(model_dir, None)``, which must then be
            a path every node sees. ``model_dir`` itself is read in this process only.
    """
    from raygen.rl.remote import make_learner, make_pool, sync_weights

    cfg.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    task = _Task.build(model_dir, prompts, targets, sid_matrix, item_embeddings, cfg, pad_id)
    learner, handle = make_learner(model_location or (model_dir, None), cfg, task.pad_id, out, task.sid_ids)
    ckpt_root = Path(checkpoint_dir) if checkpoint_dir else out / "checkpoints"
    start, history, resumed = _resume(learner, ckpt_root)
    bkw = {"batch_size": cfg.rollout_batch_size, "bf16": cfg.rollout_bf16, **(backend_kwargs or {})}
    if cfg.sid_only_head and cfg.rollout_backend == "hf":  # rollout beam scores = the learner's distribution
        bkw = {"sid_only": True, "eos_id": learner.eos_token_ids(), **bkw}
    pool = make_pool(cfg, learner.actor_model(), task.sid, task.pad_id, bkw)
    try:
        sync = sync_weights(pool, learner, handle, version=start)  # actors start from the learner's weights
        log.info("rl: initial weight sync %.2fs to %d actor(s)", sync["sync_s"], len(pool))
        for step in range(start, cfg.steps):
            m = grpo_step(step, task, pool, learner, lambda v: sync_weights(pool, learner, handle, version=v))
            if cfg.eval_every and eval_prompts is not None and (step + 1) % cfg.eval_every == 0:
                m.update(_evaluate(pool, eval_prompts, eval_targets, cfg))
            history.append(m)
            _write_jsonl(out / "metrics.jsonl", history)
            log.info("rl step %d/%d reward %.3f hit %.3f kl %.4f | rollout %.2fs train %.2fs sync %.2fs",
                     step + 1, cfg.steps, m["reward_mean"], m["hit_rate"], m.get("kl", 0.0), m["rollout_s"],
                     m["train_s"], m["sync_s"])
            if (cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0) or step + 1 == cfg.steps:
                learner.save_checkpoint(str(ckpt_root), step + 1, {"weights_version": step + 1, "history": history})
        return _finish(out, model_dir, learner, pool, cfg, history, start if resumed else None, verify_sync,
                       eval_prompts, eval_targets)
    finally:
        pool.shutdown()
        if handle is not None:
            import ray

            ray.kill(handle)


class _Task:
    """The RL problem as tensors: prompts, targets, catalog SIDs, item embeddings, reward and pad id."""

    def __init__(self, prompts, targets, sid, emb, reward_fn, pad_id: int, cfg: RlConfig):
        self.prompts, self.targets, self.sid, self.emb = prompts, targets, sid, emb
        self.reward_fn, self.pad_id, self.cfg = reward_fn, pad_id, cfg
        self.sid_ids = sorted({int(t) for t in sid.reshape(-1).tolist()})  # trainable rows under LoRA

    @classmethod
    def build(cls, model_dir, prompts, targets, sid_matrix, item_embeddings, cfg: RlConfig, pad_id):
        prompts = [list(map(int, p)) for p in prompts]
        targets_t = torch.as_tensor(np.asarray(targets, dtype=np.int64))
        sid = torch.as_tensor(np.asarray(sid_matrix), dtype=torch.long)
        emb = None if item_embeddings is None else torch.as_tensor(np.asarray(item_embeddings), dtype=torch.float32)
        _check_inputs(prompts, targets_t, sid, emb, cfg)
        if pad_id is None:
            cfg_path = Path(model_dir) / "config.json"
            pad_id = config_pad_id(json.loads(cfg_path.read_text()) if cfg_path.exists() else {})
        return cls(prompts, targets_t, sid, emb, combine(cfg.rewards), int(pad_id), cfg)


def _resume(learner, ckpt_root: Path) -> tuple[int, list, bool]:
    latest = latest_checkpoint(ckpt_root)
    if latest is None:
        return 0, [], False
    state = learner.load_checkpoint(str(latest))
    log.info("rl: resumed from %s (step %d)", latest, int(state["step"]))
    return int(state["step"]), list(state.get("history", [])), True


def grpo_step(step: int, task: _Task, pool, learner, sync) -> dict:
    """One RL step: rollout -> reward -> advantages -> update -> sync; returns its metrics. With
    ``signal_rounds`` > 1 (dynamic sampling) the rollout/reward/advantage part repeats on fresh prompts until
    ``rollout_batch`` groups with reward variance are found (:func:`_draw_groups`)."""
    g, n_tok = task.cfg.group_size, task.sid.shape[1]
    t0 = time.perf_counter()
    drawn = _draw_groups(step, task, pool)                                             # rollout + reward
    rollout_s = time.perf_counter() - t0
    batch, ro, adv = drawn["prompts"], drawn["rollouts"], drawn["advantages"]
    t1 = time.perf_counter()
    sft = {"sft_prompts": batch, "sft_tokens": task.sid[drawn["targets"]]} if task.cfg.sft_coef > 0 else {}
    stats = learner.train_step([p for p in batch for _ in range(g)], ro.tokens.reshape(-1, n_tok),      # update
                               adv.reshape(-1), **sft)
    train_s = time.perf_counter() - t1
    synced = sync(step + 1)                                                                            # sync
    n_items = drawn["n_rollouts"]
    return {"step": step + 1, "reward_mean": drawn["reward_mean"], "reward_std": drawn["reward_std"],
            "hit_rate": drawn["hit_rate"], "groups_with_signal": drawn["signal"],
            "unique_items_per_group": drawn["unique"], "invalid_rollouts": drawn["invalid"],
            "prompts_drawn": drawn["n_prompts"], "injected_targets": drawn["injected_targets"],
            "trained_groups_with_signal": float((adv != 0).any(dim=1).float().mean()),
            **stats, "rollout_s": rollout_s, "train_s": train_s, "sync_s": synced["sync_s"],
            "rollout_tokens_per_s": n_items * n_tok / max(rollout_s, 1e-9),
            "rollouts_per_s": n_items / max(rollout_s, 1e-9),
            "weights_version": min(synced["versions"])}


def _draw_groups(step: int, task: _Task, pool) -> dict:
    """The groups RL step ``step`` trains on, and statistics over every group drawn for it.

    Round ``r`` of step ``s`` takes the prompts of virtual step ``s * signal_rounds + r`` of
    :func:`batch_indices` (a pure function: a resumed run draws the same prompts; with one round it is exactly
    plain GRPO's order). Rounds stop once ``rollout_batch`` groups with signal are found; those are kept (the
    first ``rollout_batch``), or the last round's groups when no round had any. The hit rate, rewards and
    share of groups with signal describe every drawn group (the rollout policy), not only the kept ones.
    """
    cfg, g = task.cfg, task.cfg.group_size
    n = min(cfg.rollout_batch, len(task.prompts))
    rounds = []  # (prompts, rollouts, the rollouts hit the target, rewards, advantages, has signal, targets)
    for r in range(cfg.signal_rounds):
        virtual = step * cfg.signal_rounds + r
        idx = batch_indices(len(task.prompts), n, virtual, cfg.seed)
        prompts = [task.prompts[i] for i in idx]
        ro = pool.generate(prompts, g, cfg.rollout_mode, cfg.temperature, seed=cfg.seed + virtual)
        tgt = task.targets[torch.as_tensor(idx)]
        hit = (ro.items == tgt[:, None]).any(dim=1)  # the rollout policy's own hits, before any injection
        if cfg.target_in_group:
            ro = inject_targets(ro, tgt, task.sid)
        rewards = task.reward_fn(ro.items, tgt, RewardContext(scores=ro.scores, item_embeddings=task.emb,
                                                              prompt_index=torch.as_tensor(idx), sid_matrix=task.sid))
        adv = group_advantages(rewards)
        rounds.append((prompts, ro, hit, rewards, adv, (adv != 0).any(dim=1), tgt))
        if sum(int(x[5].sum()) for x in rounds) >= n:
            break
    if cfg.signal_rounds == 1 or not any(bool(x[5].any()) for x in rounds):
        keep = [torch.zeros(len(x[0]), dtype=torch.bool) for x in rounds]
        keep[-1][:] = True  # plain GRPO (or no signal anywhere): the last round's groups, as drawn
    else:
        keep = [x[5] for x in rounds]
    prompts = [p for x, k in zip(rounds, keep) for p, kk in zip(x[0], k.tolist()) if kk][:n]
    ro = Rollouts.cat([Rollouts(x[1].items[k], x[1].tokens[k], x[1].scores[k]) for x, k in zip(rounds, keep)])
    adv = torch.cat([x[4][k] for x, k in zip(rounds, keep)])[:n]
    targets = torch.cat([x[6][k] for x, k in zip(rounds, keep)])[:n]
    items = torch.cat([x[1].items for x in rounds])
    rewards = torch.cat([x[3] for x in rounds])
    hit = torch.cat([x[2] for x in rounds])
    return {"prompts": prompts, "rollouts": Rollouts(ro.items[:n], ro.tokens[:n], ro.scores[:n]), "advantages": adv,
            "targets": targets,
            "n_prompts": len(items), "n_rollouts": items.numel(),
            "reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()),
            "hit_rate": float(hit.float().mean()),
            "injected_targets": float((~hit).float().mean()) if task.cfg.target_in_group else 0.0,
            "signal": float(torch.cat([x[5] for x in rounds]).float().mean()),
            "unique": float(np.mean([len(set(row.tolist())) for row in items])),
            "invalid": int((items < 0).sum())}  # not a catalog SID (or a slot left unfilled)


def inject_targets(ro: Rollouts, targets: torch.Tensor, sid: torch.Tensor) -> Rollouts:
    """``rl.target_in_group``: each group (row) without its target gets it in place of its last candidate,
    with the target's SID tokens and a score below every candidate's (never above a generated one)."""
    miss = ~(ro.items == targets[:, None]).any(dim=1)
    items, tokens, scores = ro.items.clone(), ro.tokens.clone(), ro.scores.clone().float()
    items[miss, -1] = targets[miss]
    tokens[miss, -1] = sid[targets[miss]].to(tokens.dtype)
    finite = scores[torch.isfinite(scores)]
    scores[miss, -1] = (float(finite.min()) if finite.numel() else 0.0) - 1.0
    return Rollouts(items, tokens, scores.to(ro.scores.dtype), ro.seconds)


def _finish(out: Path, model_dir: str, learner, pool, cfg: RlConfig, history: list, resumed_from, verify_sync: bool,
            eval_prompts, eval_targets) -> dict:
    """Export the final policy, write rl_summary.json and return the summary."""
    final_dir = str(out / "model")
    learner.save_final(final_dir, model_dir)
    summary = {"steps": cfg.steps, "resumed_from": resumed_from, "model_dir": final_dir,
               "actor_versions": pool.weights_versions(), "rollout_actor_recoveries": pool.recoveries,
               "rollout_precision": pool.precision(), "rollout_nodes": pool.nodes(), "history": history}
    if history:
        summary["final"] = history[-1]
    if verify_sync:
        summary["learner_checksum"] = learner.checksum()
        summary["actor_checksums"] = pool.checksums()
    if eval_prompts is not None and cfg.eval_every:
        done = {k: v for k, v in summary.get("final", {}).items() if k.startswith("eval_")}
        summary["eval"] = done or _evaluate(pool, eval_prompts, eval_targets, cfg)
    write_json(out / "rl_summary.json", {k: v for k, v in summary.items() if k != "history"})
    return summary


def _evaluate(pool, eval_prompts, eval_targets, cfg: RlConfig) -> dict:
    from raygen.eval.metrics import ranking_metrics

    ro = pool.generate([list(p) for p in eval_prompts], cfg.eval_beam, "beam")
    ks = sorted({k for k in (1, 5, 10, 20) if k <= cfg.eval_beam} | {cfg.eval_beam})
    res = ranking_metrics(ro.items.numpy(), np.asarray(eval_targets, dtype=np.int64), ks=ks)
    return {f"eval_{k}": v for k, v in res.items()}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
