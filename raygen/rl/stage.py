"""The rl stage: GRPO refinement of the SFT model, evaluated before and after on the validation split.

With ``rl.keep_best`` (default) the stage hands on whichever of the SFT and the RL model scores the
higher validation NDCG@K, K = max(eval.ks) (model selection on validation, never on test), so at
the default settings RL cannot lower validation NDCG@10; metrics.json records both, what was
chosen and ``model_dir``, the model handed on (relative to the run). On disk: ``rl/model`` when
RL was chosen; otherwise ``rl/model_ref.json`` pointing at the SFT model and the rejected policy in
``rl/rejected_rl_model`` (so ``rl/model`` never exists as a model nothing uses).
"""
from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from raygen.data.schema import DataError, SkipLog

from raygen.eval.rows import Catalog, split_rows
from raygen.eval.stage import evaluate_split
from raygen.io import read_json, read_parquet
from raygen.lm.vocab import pad_id_of
from raygen.modelref import model_dir, model_location, pass_through, write_ref
from raygen.tasks.holdout import rl_prompt_rows
from raygen.runner import StageContext
from raygen.storage import materialize

log = logging.getLogger("raygen")
REJECTED = "rejected_rl_model"
"""Where keep-best moves the RL policy it did not choose (kept for inspection; nothing loads it)."""


def item_embeddings(path, item_ids: np.ndarray) -> np.ndarray:
    """Corpus embeddings in catalog row order; an item without one is a DataError naming it."""
    t = read_parquet(path)
    by_id = dict(zip(t.column("item_id").to_pylist(), t.column("embedding").to_pylist()))
    missing = [int(i) for i in item_ids if int(i) not in by_id]
    if missing:
        raise DataError(str(path), None, "item_id", f"no embedding for {len(missing)} catalog item(s), "
                        f"e.g. item_id {missing[0]}")
    return np.asarray([by_id[int(i)] for i in item_ids], dtype=np.float32)


def selection_metric(ks) -> str:
    """The metric keep-best compares: NDCG at the largest K evaluated (NDCG@10 at the defaults)."""
    return f"ndcg@{max(ks)}"


def _shared(ctx: StageContext, local_dir) -> tuple[str, str | None]:
    """``(location, key)`` of ``local_dir`` (a folder this stage just wrote on the driver) for Ray actors: in a
    URI run it is uploaded under ``<run>/rl_checkpoints/<key>/`` (beside the RL checkpoints); otherwise the
    run folder is local or a shared mount and its absolute path is the location."""
    if not ctx.remote:
        return str(local_dir.resolve()), None
    from raygen.storage import upload_folder

    where = ctx.location("rl_checkpoints", ctx.key, local_dir.name)
    upload_folder(local_dir, where)
    return where, ctx.key


def run_rl(ctx: StageContext) -> dict:
    from transformers import AutoTokenizer

    from raygen.rl.loop import run_grpo

    cfg = ctx.cfg.rl
    upstream = ctx.input("sft")
    if not cfg.enabled:
        return pass_through(ctx.out, upstream, "rl.enabled is false")
    # The SFT model for the Ray actors (rollouts, evaluation, a learner actor: each materializes it on its
    # node) and for this driver (a URI run's model may sit under a stage this driver never pulled).
    sft_location = model_location(ctx, "sft")
    sft_dir = materialize(*sft_location)
    samples = read_parquet(ctx.input("data") / "samples.parquet")
    codes = read_parquet(ctx.input("sids") / "codes.parquet")
    tok = AutoTokenizer.from_pretrained(sft_dir, local_files_only=True)
    catalog = Catalog.from_codes(codes, tok)
    index = catalog.index_of()
    skips = SkipLog()
    prompt_samples, prompt_split = rl_prompt_rows(samples, ctx.cfg.tasks)
    train = split_rows(prompt_samples, codes, tok, ctx.cfg.tasks, prompt_split, cfg.max_train_rows, cfg.seed, skips)
    log.info("rl: %d prompts from split %r", len(train.targets), prompt_split)
    emb = (item_embeddings(ctx.input("corpus") / "embeddings.parquet", catalog.item_ids)
           if cfg.rewards.get("semantic", 0) else None)
    pad = pad_id_of(tok)

    ecfg = replace(ctx.cfg.eval, max_rows=cfg.eval_rows, baselines=[], fusion=False, splits=[cfg.eval_split])
    metric = selection_metric(ecfg.ks)
    eval_cache: dict = {}  # collects the evaluation actors' nodes
    before = evaluate_split(sft_dir, samples, codes, tok, ctx.cfg.tasks, ecfg, cfg.eval_split, None,
                            cache=eval_cache, baselines=False, location=sft_location)["raygen"]
    log.info("rl: %s %s before RL %.4f", cfg.eval_split, metric, before[metric])
    summary = run_grpo(str(sft_dir), train.prompt_ids, [index[int(t)] for t in train.targets],
                       catalog.sid_matrix, emb, cfg, str(ctx.out), pad_id=pad,
                       checkpoint_dir=str(ctx.run_dir / "rl_checkpoints" / ctx.key), model_location=sft_location)
    rl_dir = ctx.out / "model"
    after = evaluate_split(rl_dir, samples, codes, tok, ctx.cfg.tasks, ecfg, cfg.eval_split, None,
                           cache=eval_cache, baselines=False, location=_shared(ctx, rl_dir))["raygen"]
    log.info("rl: %s %s after RL %.4f", cfg.eval_split, metric, after[metric])
    history = summary.pop("history", [])
    chosen, handed_on = "rl", f"{ctx.stage}/model"  # relative to the run (ctx.out is renamed at the end)
    if cfg.keep_best and after[metric] < before[metric]:
        # one model on disk per meaning: rl/model is never a model downstream stages do not use
        chosen = "sft"
        rl_dir.rename(ctx.out / REJECTED)
        # the reference names the SFT folder in the run (not this driver's materialized copy of it)
        write_ref(ctx.out, model_dir(upstream), f"rl.keep_best: RL lowered validation {metric}")
        handed_on = read_json(ctx.out / "model_ref.json")["model_dir"]  # as the reference stores it
    first, last = (history[0], history[-1]) if history else ({}, {})
    nodes = {"rollout_actors": summary.pop("rollout_nodes", []), "rl_eval_actors": sorted(eval_cache.get("nodes", []))}
    return {"nodes": nodes, **{k: v for k, v in summary.items() if k not in ("final",)}, "model_dir": handed_on,
            "rejected_model_dir": f"{ctx.stage}/{REJECTED}" if chosen == "sft" else None,
            "valid_before": before, "valid_after": after, "chosen": chosen, "selection_metric": metric,
            "valid_metric_before": before[metric], "valid_metric_after": after[metric],
            "reward_mean_first": first.get("reward_mean"), "reward_mean_last": last.get("reward_mean"),
            "sync_s_mean": float(np.mean([h["sync_s"] for h in history])) if history else None,
            "train_rows": len(train.targets), "prompt_split": prompt_split, "skips": skips.to_dict(),
            "history": history}
