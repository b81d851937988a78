"""The align (STAR / TS-Align) and sft stages: build examples, train on Ray Train, hand on the model."""
from __future__ import annotations

import logging
from dataclasses import fields

from raygen.data.schema import SkipLog
from raygen.io import read_json, read_parquet
from raygen.lm.vocab import pad_id_of
from raygen.modelref import model_location, pass_through
from raygen.tasks.holdout import sft_samples
from raygen.runner import StageContext
from raygen.tasks.builders import (alignment_examples, build_sft_examples, mix, sids_by_item,
                                   token_align_examples)
from raygen.tasks.encode import encode_examples
from raygen.train.config import AlignConfig, TrainConfig

log = logging.getLogger("raygen")


def _inputs(ctx: StageContext):
    data, sids = ctx.input("data"), ctx.input("sids")
    return (read_parquet(data / "items.parquet"), read_parquet(data / "samples.parquet"),
            read_parquet(sids / "codes.parquet"), read_parquet(sids / "tokens.parquet"))


def _fit(ctx: StageContext, upstream: str, examples: list[dict], cfg: TrainConfig, skips: SkipLog) -> dict:
    from transformers import AutoTokenizer

    from raygen.storage import materialize
    from raygen.tracking import tensorboard_callback
    from raygen.train.ray_trainer import train

    # the upstream model as a location for the workers (they materialize it on their node) and locally here
    location, key = model_location(ctx, upstream)
    mdir = materialize(location, key)
    tok = AutoTokenizer.from_pretrained(mdir, local_files_only=True)
    encoded = encode_examples(tok, examples, cfg.max_len, skips)
    if not encoded:
        raise ValueError(f"stage {ctx.stage}: no training examples left after encoding (see skips)")
    sid_ids = read_json(ctx.input("lm") / "sid_ids.json")["ids"]
    storage = ctx.location("ray_train")  # under the run: a URI run keeps checkpoints where every node sees them
    base = TrainConfig(**{f.name: getattr(cfg, f.name) for f in fields(TrainConfig)})  # stage-only keys dropped
    tb = tensorboard_callback(ctx.run_dir / "tensorboard" / ctx.stage, prefix=ctx.stage)  # live loss/lr/tokens/s
    valid = _valid_set(ctx, tok, cfg) if cfg.valid_every > 0 else None
    summary = train(location, encoded, sid_ids, base, out_dir=ctx.out, storage_path=storage, model_key=key,
                    resume=True, name=f"{ctx.stage}-{ctx.key}", callbacks=[tb] if tb else None, valid=valid,
                    stop_step=ctx.stop_step)
    # stopped at the runner's stop_step before the schedule's end (not by validation): unfinished
    ctx.partial = 0 < ctx.stop_step < summary["total_steps"] and not summary.get("stopped_early")
    summary["model_dir"] = f"{ctx.stage}/model"  # relative to the run folder (ctx.out is renamed when the stage ends)
    tasks = {}
    for ex in examples:
        tasks[ex["task"]] = tasks.get(ex["task"], 0) + 1
    return {"mode": cfg.mode, "examples": len(encoded), "tasks": tasks, "skips": skips.to_dict(), **summary}


VALID_SEED = 0
"""Seed of the validation subset: the same rows for every run, seed and variant."""


def _valid_set(ctx: StageContext, tokenizer, cfg: TrainConfig):
    """The fixed validation rows (prompts in the training format, target indices, SID matrix)."""
    from raygen.eval.rows import Catalog, split_rows
    from raygen.train.validation import ValidSet

    data, sids = ctx.input("data"), ctx.input("sids")
    samples, codes = read_parquet(data / "samples.parquet"), read_parquet(sids / "codes.parquet")
    catalog = Catalog.from_codes(codes, tokenizer)
    rows = split_rows(samples, codes, tokenizer, ctx.cfg.tasks, "valid", cfg.valid_rows, VALID_SEED)
    if len(rows.targets) == 0:
        raise ValueError(f"stage {ctx.stage}: valid_every > 0 but the valid split has no usable rows")
    index = catalog.index_of()
    pad = pad_id_of(tokenizer)
    return ValidSet(prompt_ids=rows.prompt_ids, targets=[index[int(t)] for t in rows.targets],
                    sid_matrix=catalog.sid_matrix.tolist(), pad_id=int(pad))


def _training_stage(ctx: StageContext, cfg, upstream_stage: str, build) -> dict:
    """Hand the upstream model on when ``cfg.enabled`` is false; else ``build(items, samples, codes,
    tokens, skips)`` the examples and train on them."""
    upstream = ctx.input(upstream_stage)
    if not cfg.enabled:
        return pass_through(ctx.out, upstream, f"{ctx.stage}.enabled is false")
    skips = SkipLog()
    examples = build(*_inputs(ctx), skips)
    return _fit(ctx, upstream_stage, examples, cfg, skips)


def run_align(ctx: StageContext) -> dict:
    cfg: AlignConfig = ctx.cfg.align
    tasks = ctx.cfg.tasks

    def build(items, samples, codes, tokens, skips):
        examples = alignment_examples(items, sids_by_item(codes), tasks, skips)
        if cfg.token_ratio > 0:
            examples = mix(examples, token_align_examples(tokens, tasks, skips), cfg.token_ratio, tasks.seed)
        return examples

    return _training_stage(ctx, cfg, "lm", build)


def run_sft(ctx: StageContext) -> dict:
    tasks = ctx.cfg.tasks

    def build(items, samples, codes, tokens, skips):
        queries = None
        if tasks.search_ratio > 0:
            path = ctx.input("corpus") / "queries.parquet"
            if not path.exists():
                raise ValueError(f"tasks.search_ratio > 0 but {path} does not exist: set corpus.n_queries > 0")
            queries = read_parquet(path)
        samples, held = sft_samples(samples, tasks)
        if held:
            log.info("sft: %d train targets held out for the rl stage's prompts (tasks.rl_holdout_share %g)",
                     held, tasks.rl_holdout_share)
        return build_sft_examples(samples, items, codes, tokens, tasks, "train", skips, queries=queries)

    return _training_stage(ctx, ctx.cfg.sft, "align", build)
