"""The eval stage: constrained beam search of the final model + baselines on the same rows."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from raygen.data.schema import SkipLog
from raygen.eval.baselines import popularity_rank
from raygen.eval.beam import constrained_beam_search
from raygen.eval.config import EvalConfig
from raygen.eval.metrics import evaluate_rankings, indices_to_item_ids, write_predictions
from raygen.eval.rows import Catalog, Rows, split_rows
from raygen.eval.sasrec import fit_sasrec, sasrec_rank
from raygen.io import read_parquet
from raygen.modelref import model_dir
from raygen.runner import StageContext

log = logging.getLogger("raygen")


def beam_rank(mdir: Path, rows: Rows, catalog: Catalog, cfg: EvalConfig, pad_id: int,
              model=None) -> tuple[np.ndarray, np.ndarray]:
    """Item-id rankings [N, beam_width] and scores of the model in ``mdir`` (or the given ``model``)."""
    autocast = torch.bfloat16 if cfg.bf16 else None
    if model is not None or cfg.num_actors == 0:
        if model is None:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(mdir, local_files_only=True)
        idx, scores = constrained_beam_search(model, rows.prompt_ids, catalog.sid_matrix, cfg.beam_width, pad_id,
                                              cfg.batch_size, autocast_dtype=autocast)
    else:
        from raygen.eval.ray_layer import evaluate_distributed

        idx, scores = evaluate_distributed(str(mdir), rows.prompt_ids, catalog.sid_matrix, cfg.beam_width, pad_id,
                                           cfg.batch_size, num_actors=cfg.num_actors,
                                           num_gpus_per_actor=cfg.num_gpus_per_actor,
                                           autocast_dtype="bfloat16" if cfg.bf16 else None)
    return indices_to_item_ids(idx.numpy(), catalog.item_ids), scores.numpy()


def baseline_ranks(name: str, samples: pa.Table, catalog: Catalog, rows: Rows, cfg: EvalConfig,
                   cache: dict) -> np.ndarray:
    train = samples.filter(pc.equal(samples.column("split"), "train"))
    hist, tgt = train.column("history").to_pylist(), train.column("target").to_pylist()
    if name == "popularity":
        return popularity_rank(hist, tgt, len(rows.targets), cfg.beam_width)
    index = catalog.index_of()
    if "sasrec" not in cache:  # trained once, reused for every split
        cache["sasrec"] = fit_sasrec([[index[h] for h in hs] for hs in hist], [index[t] for t in tgt],
                                     len(catalog.item_ids), cfg.sasrec)
    top = sasrec_rank(cache["sasrec"], [[index[h] for h in hs] for hs in rows.histories], cfg.beam_width)
    return catalog.item_ids[top]


def evaluate_split(mdir, samples, codes, tokenizer, tasks_cfg, cfg: EvalConfig, split: str, out: Path | None,
                   skips: SkipLog | None = None, cache: dict | None = None, model=None,
                   baselines: bool = True) -> dict[str, dict]:
    """{method: metrics} for ``split``; writes predictions_<split>.parquet into ``out`` when given."""
    catalog = Catalog.from_codes(codes, tokenizer)
    rows = split_rows(samples, codes, tokenizer, tasks_cfg, split, cfg.max_rows, cfg.seed, skips)
    if len(rows.targets) == 0:
        raise ValueError(f"split {split!r} has no evaluable rows")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    topk, scores = beam_rank(mdir, rows, catalog, cfg, pad, model=model)
    if out is not None:
        write_predictions(out / f"predictions_{split}.parquet", rows.row_ids, rows.targets, topk, scores)
    table = {"raygen": evaluate_rankings(topk, rows.targets, catalog.item_ids, cfg.ks)}
    for name in (cfg.baselines if baselines else []):
        ranks = baseline_ranks(name, samples, catalog, rows, cfg, cache if cache is not None else {})
        table[name] = evaluate_rankings(ranks, rows.targets, catalog.item_ids, cfg.ks)
    return table


def run_eval(ctx: StageContext) -> dict:
    from transformers import AutoTokenizer

    cfg: EvalConfig = ctx.cfg.eval
    samples = read_parquet(ctx.input("data") / "samples.parquet")
    codes = read_parquet(ctx.input("sids") / "codes.parquet")
    mdir = model_dir(ctx.input("rl"))
    tokenizer = AutoTokenizer.from_pretrained(mdir, local_files_only=True)
    skips, cache, per_split = SkipLog(), {}, {}
    for split in cfg.splits:
        per_split[split] = evaluate_split(mdir, samples, codes, tokenizer, ctx.cfg.tasks, cfg, split, ctx.out,
                                          skips, cache)
        log.info("eval %s: %s", split, {m: round(v["ndcg@10"], 4) if "ndcg@10" in v else v
                                        for m, v in per_split[split].items()})
    main = "test" if "test" in per_split else cfg.splits[-1]
    slim = {m: {k: v for k, v in r.items() if k.startswith(("hr@", "ndcg@")) or k == "invalid"}
            for m, r in per_split[main].items()}
    return {"model_dir": str(mdir), "split": main, "n_rows": per_split[main]["raygen"]["n"],
            "invalid": per_split[main]["raygen"].get("invalid", 0), "table": slim, "splits": per_split,
            "skips": skips.to_dict()}
