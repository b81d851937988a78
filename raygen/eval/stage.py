"""The eval stage: constrained beam search of the final model + baselines on the same rows."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from raygen.data.schema import SkipLog
from raygen.eval.baselines import content_rank, popularity_rank
from raygen.generation.beam import constrained_beam_search
from raygen.eval.config import EvalConfig
from raygen.eval.fusion import HYBRID, rrf_fuse, serving_choice
from raygen.eval.metrics import confidence, evaluate_rankings, indices_to_item_ids, write_predictions
from raygen.eval.rows import Catalog, Rows, split_rows
from raygen.eval.sasrec import fit_sasrec, sasrec_rank
from raygen.eval.search import BM25, SEARCH_KS, search_rows, search_table
from raygen.eval.slices import cold_mask, slice_metrics, training_targets
from raygen.io import read_parquet
from raygen.lm.vocab import pad_id_of
from raygen.modelref import model_location
from raygen.precision import resolve_bf16
from raygen.runner import StageContext
from raygen.storage import materialize

log = logging.getLogger("raygen")


def _note_precision(precision: dict | None, info: dict) -> None:
    """Log the beam search's precision (once per change) and copy it into ``precision`` if given."""
    if precision is None or precision != info:
        log.info("eval precision: %s (%s)", "bf16" if info["bf16"] else "fp32", info["reason"])
    if precision is not None:
        precision.clear()
        precision.update(info)


def beam_rank(mdir: Path, rows: Rows, catalog: Catalog, cfg: EvalConfig, pad_id: int,
              model=None, precision: dict | None = None, eos_id: int | None = None,
              location: tuple[str, str | None] | None = None,
              nodes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Item-id rankings [N, beam_width] and scores of the model in ``mdir`` (or the given ``model``).

    ``cfg.bf16`` ('auto', true, false) is resolved for the device the search runs on (the model's, or
    each Ray actor's); ``precision``, if given, receives ``{"bf16": bool, "reason": str}``.
    ``location`` = ``(location, key)`` of the same model for the Ray actors (they materialize it on their
    node; :func:`raygen.modelref.model_location`); without it they get ``mdir``, which must then be a path
    every node sees. The actors' Ray node ids are appended to ``nodes`` when given.
    """
    if model is not None or cfg.resources.count == 0:
        if model is None:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(mdir, local_files_only=True)
        use, reason = resolve_bf16(cfg.bf16, next(model.parameters()).device)
        _note_precision(precision, {"bf16": use, "reason": reason})
        idx, scores = constrained_beam_search(model, rows.prompt_ids, catalog.sid_matrix, cfg.beam_width, pad_id,
                                              cfg.batch_size, autocast_dtype=torch.bfloat16 if use else None,
                                              sid_only=cfg.sid_only_head, eos_id=eos_id)
    else:
        from raygen.eval.ray_layer import evaluate_distributed

        info: dict = {}
        where, key = location or (str(mdir), None)
        idx, scores = evaluate_distributed(where, rows.prompt_ids, catalog.sid_matrix, cfg.beam_width, pad_id,
                                           cfg.batch_size, resources=cfg.resources, bf16=cfg.bf16,
                                           precision=info, sid_only=cfg.sid_only_head, eos_id=eos_id,
                                           model_key=key, nodes=nodes)
        _note_precision(precision, info)
    return indices_to_item_ids(idx.numpy(), catalog.item_ids), scores.numpy()


def sasrec_valid_data(samples: pa.Table, index: dict[int, int]) -> tuple[list[list[int]], list[int], int]:
    """The 'valid' split's histories and targets as catalog indices (``index``: item id -> index), for
    SASRec early stopping, and how many rows were skipped (an item outside the catalog, or no history)."""
    valid = samples.filter(pc.equal(samples.column("split"), "valid"))
    hist, tgt, skipped = [], [], 0
    for hs, t in zip(valid.column("history").to_pylist(), valid.column("target").to_pylist()):
        if not hs or t not in index or any(h not in index for h in hs):
            skipped += 1
            continue
        hist.append([index[h] for h in hs])
        tgt.append(index[t])
    return hist, tgt, skipped


def fit_sasrec_baseline(samples: pa.Table, catalog: Catalog, cfg: EvalConfig):
    """SASRec on the 'train' split, early-stopped on the 'valid' split; ``model.fit_info`` gains
    ``valid_skipped_rows``."""
    index = catalog.index_of()
    train = samples.filter(pc.equal(samples.column("split"), "train"))
    hist, tgt = train.column("history").to_pylist(), train.column("target").to_pylist()
    vh, vt, skipped = sasrec_valid_data(samples, index)
    if skipped:
        log.warning("sasrec: %d valid row(s) skipped for early stopping (item outside the catalog or no history)",
                    skipped)
    model = fit_sasrec([[index[h] for h in hs] for hs in hist], [index[t] for t in tgt], len(catalog.item_ids),
                       cfg.sasrec, valid_histories=vh, valid_targets=vt)
    model.fit_info["valid_skipped_rows"] = skipped
    log.info("sasrec: %s", model.fit_info)
    return model


def baseline_ranks(name: str, samples: pa.Table, catalog: Catalog, rows: Rows, cfg: EvalConfig,
                   cache: dict) -> np.ndarray:
    if name == "popularity":
        train = samples.filter(pc.equal(samples.column("split"), "train"))
        hist, tgt = train.column("history").to_pylist(), train.column("target").to_pylist()
        return popularity_rank(hist, tgt, len(rows.targets), cfg.beam_width)
    if name == "content":
        return content_top(catalog, rows, cfg, cache, cfg.beam_width)
    index = catalog.index_of()
    if "sasrec" not in cache:  # trained once, reused for every split
        cache["sasrec"] = fit_sasrec_baseline(samples, catalog, cfg)
    top = sasrec_rank(cache["sasrec"], [[index[h] for h in hs] for hs in rows.histories], cfg.beam_width)
    return catalog.item_ids[top]


def content_top(catalog: Catalog, rows: Rows, cfg: EvalConfig, cache: dict, k: int) -> np.ndarray:
    """The content ranking's top ``k`` item ids for ``rows`` (the corpus embeddings in ``cache['embeddings']``)."""
    if "embeddings" not in cache:
        raise ValueError("eval.baselines 'content' and eval.fusion need the corpus stage's item embeddings "
                         "(cache['embeddings'] = raygen.sid.stage.read_embeddings(corpus/embeddings.parquet))")
    emb_ids, X = cache["embeddings"]
    return content_rank(rows.histories, catalog.item_ids, emb_ids, X, k, cfg.content_last)


def evaluate_split(mdir, samples, codes, tokenizer, tasks_cfg, cfg: EvalConfig, split: str, out: Path | None,
                   skips: SkipLog | None = None, cache: dict | None = None, model=None,
                   baselines: bool = True, intervals: dict | None = None,
                   location: tuple[str, str | None] | None = None) -> dict[str, dict]:
    """{method: metrics} for ``split``; writes predictions_<split>.parquet into ``out`` when given.
    ``location``: the model's location for Ray actors (see :func:`beam_rank`); ``cache["nodes"]``, when
    ``cache`` is given, collects the beam-search actors' Ray node ids.
    ``intervals``, if given, receives ``{split: {metric: confidence(...)}}`` for NDCG and HR at max(ks):
    every method's 95 % bootstrap interval and the paired differences of the model and the hybrid with
    the others (:func:`raygen.eval.metrics.confidence`)."""
    catalog = Catalog.from_codes(codes, tokenizer)
    rows = split_rows(samples, codes, tokenizer, tasks_cfg, split, cfg.max_rows, cfg.seed, skips)
    if len(rows.targets) == 0:
        raise ValueError(f"split {split!r} has no evaluable rows")
    pad = pad_id_of(tokenizer)
    topk, scores = beam_rank(mdir, rows, catalog, cfg, pad, model=model,
                             precision=None if cache is None else cache.setdefault("precision", {}),
                             eos_id=tokenizer.eos_token_id, location=location,
                             nodes=None if cache is None else cache.setdefault("nodes", []))
    if out is not None:
        write_predictions(out / f"predictions_{split}.parquet", rows.row_ids, rows.targets, topk, scores)
    cold = cold_mask(rows.targets, training_targets(samples))
    table = {"raygen": _with_slices(evaluate_rankings(topk, rows.targets, catalog.item_ids, cfg.ks), topk,
                                    rows.targets, cold, cfg.ks)}
    cache = cache if cache is not None else {}
    ranked = {"raygen": topk}
    for name in [*cfg.baselines, *([HYBRID] if cfg.fusion else [])] if baselines else []:
        if name == HYBRID:  # the hybrid: the model's list fused with the content ranking's top
            ranks = rrf_fuse([topk, content_top(catalog, rows, cfg, cache, cfg.fusion_depth)], cfg.beam_width)
        else:
            ranks = baseline_ranks(name, samples, catalog, rows, cfg, cache)
        ranked[name] = ranks
        table[name] = _with_slices(evaluate_rankings(ranks, rows.targets, catalog.item_ids, cfg.ks), ranks,
                                   rows.targets, cold, cfg.ks)
    if intervals is not None:
        others = [m for m in ranked if m not in ("raygen", HYBRID)]
        pairs = [("raygen", m) for m in others] + ([(HYBRID, "raygen")] + [(HYBRID, m) for m in others]
                                                   if HYBRID in ranked else [])
        intervals[split] = {f"{m}@{max(cfg.ks)}": confidence(ranked, rows.targets, f"{m}@{max(cfg.ks)}", pairs,
                                                             seed=cfg.seed) for m in ("ndcg", "hr")}
    return table


def _with_slices(metrics: dict, topk, targets, cold, ks) -> dict:
    """``metrics`` plus ``slices``: the cold rows' (target never a training target) and warm rows' metrics."""
    return {**metrics, "slices": slice_metrics(topk, targets, cold, ks)}


def search_rankings(mdir, queries: pa.Table, codes: pa.Table, tokenizer, tasks_cfg, cfg: EvalConfig,
                    skips: SkipLog | None = None, cache: dict | None = None, model=None,
                    location: tuple[str, str | None] | None = None
                    ) -> tuple[Rows, list[str], Catalog, np.ndarray, np.ndarray]:
    """The test queries as rows (:func:`~raygen.eval.search.search_rows`: the first ``query2sid`` template,
    at most ``cfg.search_max_rows``), their texts, the catalog, and the model's item rankings
    ``[N, beam_width]`` and scores (constrained beam search over the catalog's SIDs)."""
    catalog = Catalog.from_codes(codes, tokenizer)
    rows, texts = search_rows(queries, codes, tokenizer, tasks_cfg, "test", cfg.search_max_rows, cfg.seed, skips)
    if len(rows.targets) == 0:
        raise ValueError("search: the queries have no test-split rows of items with a SID")
    topk, scores = beam_rank(mdir, rows, catalog, cfg, pad_id_of(tokenizer), model=model,
                             precision=None if cache is None else cache.setdefault("precision", {}),
                             eos_id=tokenizer.eos_token_id, location=location,
                             nodes=None if cache is None else cache.setdefault("nodes", []))
    return rows, texts, catalog, topk, scores


def evaluate_search(mdir, queries: pa.Table, items: pa.Table, codes: pa.Table, tokenizer, tasks_cfg,
                    cfg: EvalConfig, out: Path | None, skips: SkipLog | None = None, cache: dict | None = None,
                    model=None, location: tuple[str, str | None] | None = None) -> dict:
    """STAR's search task on the test queries: ``{method: {"recall@K", "ndcg@K", "n", ...}}`` for the model
    (constrained beam search on the trained ``query2sid`` prompt: :func:`search_rankings`) and the BM25
    baseline on the same queries; writes ``predictions_search.parquet`` into ``out`` when given."""
    rows, texts, catalog, topk, scores = search_rankings(mdir, queries, codes, tokenizer, tasks_cfg, cfg, skips, cache,
                                                         model, location)
    if out is not None:
        write_predictions(out / "predictions_search.parquet", rows.row_ids, rows.targets, topk, scores)
    ks = [k for k in SEARCH_KS if k <= cfg.beam_width]
    return {"raygen": search_table(topk, rows.targets, catalog.item_ids, ks),
            "bm25": search_table(BM25(items).rank(texts, cfg.beam_width), rows.targets, catalog.item_ids, ks)}


def run_eval(ctx: StageContext) -> dict:
    from transformers import AutoTokenizer

    cfg: EvalConfig = ctx.cfg.eval
    samples = read_parquet(ctx.input("data") / "samples.parquet")
    codes = read_parquet(ctx.input("sids") / "codes.parquet")
    # The model rl hands on, for the beam-search actors (they materialize it on their node) and for this
    # driver (a URI run's model may live under a stage the driver never pulled: materialize it too).
    location = model_location(ctx, "rl")
    mdir = materialize(*location)
    tokenizer = AutoTokenizer.from_pretrained(mdir, local_files_only=True)
    skips, cache, per_split, intervals = SkipLog(), {}, {}, {}
    if "content" in cfg.baselines or cfg.fusion:
        from raygen.sid.stage import read_embeddings

        cache["embeddings"] = read_embeddings(ctx.input("corpus") / "embeddings.parquet")
    for split in cfg.splits:
        per_split[split] = evaluate_split(mdir, samples, codes, tokenizer, ctx.cfg.tasks, cfg, split, ctx.out,
                                          skips, cache, intervals=intervals, location=location)
        log.info("eval %s: %s", split, {m: round(v["ndcg@10"], 4) if "ndcg@10" in v else v
                                        for m, v in per_split[split].items()})
    main = "test" if "test" in per_split else cfg.splits[-1]
    slim = {m: {k: v for k, v in r.items() if k.startswith(("hr@", "ndcg@")) or k == "invalid"}
            for m, r in per_split[main].items()}
    out = {"model_dir": location[0], "split": main, "n_rows": per_split[main]["raygen"]["n"],
           "invalid": per_split[main]["raygen"].get("invalid", 0), "table": slim, "splits": per_split,
           "slices": {m: r["slices"] for m, r in per_split[main].items() if "slices" in r},
           "skips": skips.to_dict(), "precision": cache.get("precision", {}), "intervals": intervals,
           "serving": serving_choice(per_split, f"ndcg@{max(cfg.ks)}", intervals),  # what `raygen recommend` serves
           "nodes": {"eval_actors": sorted(cache.get("nodes", []))}}  # Ray nodes of the beam-search actors
    log.info("eval serving: %s (%s)", out["serving"]["ranking"], out["serving"]["why"])
    queries = ctx.input("corpus") / "queries.parquet"
    if cfg.search and ctx.cfg.tasks.search_ratio > 0 and queries.exists():  # only a model trained to search
        out["search"] = evaluate_search(mdir, read_parquet(queries), read_parquet(ctx.input("data") / "items.parquet"),
                                        codes, tokenizer, ctx.cfg.tasks, cfg, ctx.out, skips, cache,
                                        location=location)
        log.info("eval search: %s", {m: round(v["ndcg@10"], 4) if "ndcg@10" in v else v
                                     for m, v in out["search"].items()})
        out["skips"] = skips.to_dict()
    if "sasrec" in cache:
        out["sasrec_fit"] = cache["sasrec"].fit_info
    return out
