"""Top-K recommendations for one user history from a finished run (``raygen recommend``).

    recommend("runs/default", [1012, 1187, 1003], k=10)
    # -> [{"item_id": 1150, "title": "...", "score": -1.93, "sid": "<a_3><b_12><c_7>"}, ...]
    recommend("runs/default", query="stainless hex bolt", k=5)   # STAR's search task

Everything comes from the run folder: the final model (the ``rl`` stage's, which is what ``eval``
scores), the SID catalog (``sids/codes.parquet``), titles (``data/items.parquet``) and the run's
resolved config (``config.yaml``, written by :func:`raygen.pipeline.run_pipeline`), whose ``tasks``
section rebuilds the exact prompt SFT trained on and eval scores with. The config is checked against
the finished model: the stage keys it hashes to must equal the key in ``rl/_SUCCESS``.

Items are ranked by constrained beam search over the catalog (:mod:`raygen.generation.beam`), so every
answer is a real item; ``score`` is the log-probability of the item's SID given the prompt.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from raygen.additions import in_vocabulary, read_additions
from raygen.eval.fusion import HYBRID
from raygen.io import read_json
from raygen.pipeline import CONFIG_FILE

log = logging.getLogger("raygen")

FINAL_STAGE = "rl"
"""The stage whose model is the run's final model (eval's upstream)."""


class RecommendError(ValueError):
    """The run folder or the query cannot give recommendations; the message says why."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def local_run(run_dir: str | Path) -> Path:
    """The run as a local folder: a path as is; a URI run (``s3://...``) materialized read-only into the
    node's cache (what serving reads: :func:`raygen.runstore.snapshot`), once per content version."""
    from raygen import runstore, storage

    if not storage.is_uri(run_dir):
        return Path(run_dir)
    try:
        if not storage.exists(str(run_dir)):
            raise RecommendError(f"run folder {run_dir} does not exist")
        return runstore.snapshot(str(run_dir))
    except OSError as e:
        raise RecommendError(f"run folder {run_dir} cannot be read: {_first_line(e)}") from None


def load_run_config(run_dir: str | Path):
    """The resolved :class:`~raygen.config.PipelineConfig` a run saved in ``<run_dir>/config.yaml``
    (``run_dir`` may be a URI: see :func:`local_run`)."""
    from raygen.config import load_config
    from raygen.configbase import ConfigError

    run_dir = local_run(run_dir)
    if not Path(run_dir).is_dir():
        raise RecommendError(f"run folder {run_dir} does not exist")
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise RecommendError(f"{path} not found: not a raygen run folder, or one written before runs saved "
                             "their config; rerun `raygen run` with the same config and --run-dir (finished "
                             "stages are skipped) to write it")
    try:
        return load_config(path)
    except ConfigError as e:
        raise RecommendError(f"the run's saved config is unusable: {e}") from None


def check_final_model(run_dir: str | Path, cfg) -> Path:
    """Folder of the run's final model, after checking that ``cfg`` is the config that produced it."""
    from raygen.modelref import model_dir
    from raygen.pipeline import STAGES
    from raygen.runner import SUCCESS, stage_keys, success_key

    run_dir = Path(run_dir)
    marker = run_dir / FINAL_STAGE / SUCCESS
    if not marker.exists():
        raise RecommendError(f"{run_dir} has no finished model: stage {FINAL_STAGE!r} has not finished "
                             f"(no {marker}); run `raygen run` up to stage {FINAL_STAGE!r} first")
    keys = stage_keys(cfg, STAGES)
    done = success_key(run_dir / FINAL_STAGE)
    if done is None:
        raise RecommendError(f"{marker} is not a valid raygen marker (a JSON object with the stage 'key'): the "
                             f"run folder is damaged; rerun `raygen run` up to stage {FINAL_STAGE!r}")
    if done != keys[FINAL_STAGE]:
        raise RecommendError(
            f"{run_dir / CONFIG_FILE} is not the config that produced the model in {run_dir / FINAL_STAGE} "
            f"(stage key {keys[FINAL_STAGE]} != {done}): a later `raygen run` with another config "
            "overwrote it; rerun with the config of the finished model to restore it")
    try:
        mdir = model_dir(run_dir / FINAL_STAGE)
    except FileNotFoundError as e:
        raise RecommendError(f"{run_dir} has no usable final model: {e}") from None
    except (ValueError, TypeError, KeyError, OSError) as e:  # a damaged model_ref.json
        raise RecommendError(f"{run_dir / FINAL_STAGE / 'model_ref.json'} is unreadable ({_first_line(e)}): "
                             "the run folder is damaged") from None
    if not (mdir / "config.json").is_file():
        raise RecommendError(f"{mdir} (the final model of {run_dir / FINAL_STAGE}) is not a saved model (no "
                             "config.json): its stage folder was removed or damaged; rerun `raygen run`")
    return mdir


class Recommender:
    """A finished run loaded once (model, tokenizer, catalog, titles), queried many times.

    ``workers`` = 0 (default): the beam search runs in this process, on ``device`` (default: CUDA when
    present). ``workers`` > 0: it runs on that many Ray actors of the generation pool (the eval stage's and
    RL's :class:`raygen.generation.pool.RolloutPool`, 'hf' backend), each reserving ``eval.resources.cpus`` /
    ``.gpus`` and loading the model itself; rows are split evenly and gathered in order, so the rankings are
    the in-process ones. The pool starts on the first request (a Ray must be running or startable:
    :func:`raygen.ray_utils.init_ray`); :meth:`close` stops it.
    """

    def __init__(self, run_dir: str | Path, device: str | None = None, workers: int = 0):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from raygen.eval.rows import Catalog
        from raygen.io import read_parquet
        from raygen.lm.vocab import pad_id_of
        from raygen.tasks.builders import sids_by_item

        if workers < 0:
            raise RecommendError(f"workers must be >= 0 (0 = this process), got {workers}")
        self.location = str(run_dir)
        """The run as given (a path or a URI)."""
        self.run_dir = local_run(run_dir)
        """The run's local folder (for a URI: its read-only copy in the node's cache)."""
        self.cfg = load_run_config(self.run_dir)
        mdir = check_final_model(self.run_dir, self.cfg)
        self.model_dir = Path(mdir)
        """The model folder this run hands on (rl/model, or what rl/model_ref.json points at)."""
        tables = {}
        for stage, name, columns in (("data", "items.parquet", ["item_id", "title"]), ("sids", "codes.parquet", None)):
            path = self.run_dir / stage / name
            if not path.exists():
                raise RecommendError(f"{path} not found (stage {stage!r} output)")
            try:
                tables[name] = read_parquet(path).select(columns) if columns else read_parquet(path)
            except Exception as e:  # truncated / not Parquet / columns missing
                raise RecommendError(f"{path} is unreadable ({_first_line(e)}): the run folder is damaged") from e
        items, codes = tables["items.parquet"], tables["codes.parquet"]
        self.titles = dict(zip(items.column("item_id").to_pylist(), items.column("title").to_pylist()))
        from raygen.data.idmap import ItemIds

        self.ids = ItemIds.read(self.run_dir / "data")
        """The team's own item ids (``data/item_ids.parquet``, written by the table source), or the identity:
        histories come in and recommendations go out in these ids."""
        self.added, _ = read_additions(self.run_dir)
        """Items added after training (``raygen add-items``), or None."""
        self.content_only: set[int] = set()
        """Added items whose SID has a token the model lacks: the content ranking (hybrid) reaches them, the
        beam search cannot."""
        try:
            self.sids = sids_by_item(codes)
            self.tokenizer = AutoTokenizer.from_pretrained(mdir, local_files_only=True)
            if self.added is not None:
                codes = self._merge_additions(codes)
            self.catalog = Catalog.from_codes(codes, self.tokenizer)
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            self.model = (AutoModelForCausalLM.from_pretrained(mdir, local_files_only=True).to(device).eval()
                          if workers == 0 else None)
        except Exception as e:  # truncated safetensors, missing tokenizer files, codes without SID tokens, ...
            raise RecommendError(f"cannot load the model in {mdir} ({_first_line(e)}): the run folder is damaged; "
                                 "rerun `raygen run` to rebuild it") from e
        from raygen.precision import resolve_bf16

        self.workers = workers
        self._pool = None
        use, reason = resolve_bf16(self.cfg.eval.bf16, device)
        self.precision = {"bf16": use, "reason": reason}
        """Beam search under bf16 autocast or not: the run's ``eval.bf16`` resolved for this device (with
        workers: for theirs, once the pool has started)."""
        tok = self.tokenizer
        self.pad_id = pad_id_of(tok)
        self.embeddings = None
        """The corpus embeddings (item ids, vectors), read on the first hybrid request."""
        self._served: dict | None = None
        """:meth:`serving`, read on the first request that leaves the ranking to it."""

    def _merge_additions(self, codes):
        """Titles and SIDs of the added items; ``codes`` plus the added items the beam search can emit."""
        import pyarrow as pa

        from raygen.tasks.builders import sids_by_item

        added = self.added
        self.titles.update(zip(added.column("item_id").to_pylist(), added.column("title").to_pylist()))
        self.sids.update(sids_by_item(added))
        ok = in_vocabulary(added.column("codes").to_pylist(), self.tokenizer.get_vocab())
        self.content_only = {i for i, good in zip(added.column("item_id").to_pylist(), ok) if not good}
        reachable = added.filter(pa.array(ok)).select(["item_id", "codes"]).cast(codes.select(["item_id", "codes"]).schema)
        return pa.concat_tables([codes.select(["item_id", "codes"]), reachable])

    def check_history(self, history: Sequence) -> list[int]:
        """``history`` (the run's own item ids: :attr:`ids`) as internal ints; RecommendError naming every item
        this run does not know."""
        problem = self.history_problem(history)
        if problem is not None:
            raise RecommendError(problem[1])
        return [self.ids.internal(h) for h in history]

    def history_problem(self, history: Sequence) -> tuple[str, str] | None:
        """Why ``history`` (the run's own item ids) cannot be ranked: ``(kind, message)``, or None when it can.
        Kinds: ``empty_history``, ``unknown_items``, ``content_only_items``, ``items_without_sid``."""
        if not history:
            return "empty_history", "the history is empty: give at least one item id"
        internal = [self.ids.internal(h) for h in history]
        unknown = sorted({i if self.ids.identity and i is not None else h for h, i in zip(history, internal)
                          if i is None or i not in self.titles}, key=lambda x: (isinstance(x, str), x))
        if unknown:
            return "unknown_items", (f"unknown item id(s) {unknown}: not in this run's catalog "
                                     f"({self.run_dir / 'data' / 'items.parquet'}, {len(self.titles)} items)")
        history = internal
        late = self.ids.externals(sorted({h for h in history if h in self.content_only}))
        if late:
            return "content_only_items", (
                f"item id(s) {late} were added after training with SID tokens the model does not have: they can "
                "be recommended (the hybrid's content ranking) but cannot be part of a history until the next "
                "training run")
        no_sid = self.ids.externals(sorted({h for h in history if h not in self.sids}))
        if no_sid:
            return "items_without_sid", f"item id(s) {no_sid} have no semantic ID in {self.run_dir / 'sids' / 'codes.parquet'}"
        return None

    def prompt_ids(self, history: list[int]) -> list[int]:
        """The seqrec prompt of ``history``, built by the same builder and config as SFT and eval."""
        from raygen.tasks.builders import next_item_prompt_ids

        return next_item_prompt_ids(self.tokenizer, [history], self.sids, self.cfg.tasks)[0]

    def serving(self) -> dict:
        """The eval stage's choice of the ranking to serve (:func:`raygen.eval.fusion.serving_choice`: the hybrid
        where it beat the model on the valid split), or the model alone, with ``why``, where the run has no
        finished eval of this config (not run yet, run with another config, or written before the choice)."""
        from raygen.pipeline import STAGES
        from raygen.runner import SUCCESS, stage_keys, success_key

        stage = self.run_dir / "eval"
        if not (stage / SUCCESS).exists():
            return {"ranking": "raygen", "chosen_on": None, "why": f"no finished eval stage in {stage}"}
        if success_key(stage) != stage_keys(self.cfg, STAGES)["eval"]:
            return {"ranking": "raygen", "chosen_on": None,
                    "why": f"{stage} was evaluated with another config than {self.run_dir / CONFIG_FILE}"}
        try:
            choice = read_json(stage / "metrics.json").get("serving")
        except (OSError, ValueError) as e:
            raise RecommendError(f"{stage / 'metrics.json'} is unreadable ({_first_line(e)}): the run folder is "
                                 "damaged") from None
        if not isinstance(choice, dict) or choice.get("ranking") not in ("raygen", HYBRID):
            return {"ranking": "raygen", "chosen_on": None,
                    "why": f"{stage / 'metrics.json'} has no serving choice (an eval stage older than it)"}
        return choice

    def use_hybrid(self, hybrid: bool | None) -> bool:
        """``hybrid``, or (None) the eval stage's choice (:meth:`serving`, read and logged once per loaded run)."""
        if hybrid is None:
            if self._served is None:
                self._served = self.serving()
                log.info("serving %s: %s", self._served["ranking"], self._served["why"])
            hybrid = self._served["ranking"] == HYBRID
        return hybrid

    def top_k(self, history: Sequence[int], k: int = 10, exclude_history: bool = False,
              hybrid: bool | None = None) -> list[dict]:
        """Up to ``k`` distinct catalog items, best first: ``{item_id, title, score, sid}``.

        ``score`` is the SID log-probability (higher is better). ``k`` larger than the catalog gives
        the whole catalog; ``exclude_history`` drops items already in the history. ``hybrid``: true = the
        eval stage's 'raygen+content' ranking (:meth:`fuse_content`), false = the model alone, None (default)
        = the ranking the eval stage chose on the valid split (:meth:`serving`).
        """
        return self.top_k_many([history], k, exclude_history, hybrid)[0]

    def top_k_many(self, histories: Sequence[Sequence[int]], k: int = 10, exclude_history: bool = False,
                   hybrid: bool | None = None) -> list[list[dict]]:
        """:meth:`top_k` of each history, ranked together: one batched constrained beam search
        (``eval.batch_size`` rows per forward pass) and one content ranking for the lot."""
        if k < 1:
            raise RecommendError(f"k must be >= 1, got {k}")
        histories = [self.check_history(h) for h in histories]
        if not histories:
            return []
        seens = [set(h) if exclude_history else set() for h in histories]
        ranked = self._ranked_many([self.prompt_ids(h) for h in histories], k, seens)
        return self._external(self.fuse_content(histories, ranked, k, seens) if self.use_hybrid(hybrid) else ranked)

    def _external(self, rows: list[list[dict]]) -> list[list[dict]]:
        """Records with ``item_id`` in the run's own ids (:attr:`ids`)."""
        if not self.ids.identity:
            for recs in rows:
                for r in recs:
                    r["item_id"] = self.ids.external(r["item_id"])
        return rows

    def fuse_content(self, histories: list[list[int]], ranked: list[list[dict]], k: int,
                     seens: list[set[int]]) -> list[list[dict]]:
        """Each history's model list (``ranked``) fused with the content ranking of the history (the corpus
        embeddings' cosine to the last ``eval.content_last`` items, top ``eval.fusion_depth``) by reciprocal
        rank fusion, as the eval stage's 'raygen+content' (raygen.eval.fusion). Records: ``{item_id, title,
        score (the fused score), sid, model_rank, content_rank}`` (ranks 1-based, None where the list lacks
        the item)."""
        from raygen.eval.baselines import content_rank
        from raygen.eval.fusion import rrf_scores

        if self.embeddings is None:
            from raygen.sid.stage import read_embeddings

            path = self.run_dir / "corpus" / "embeddings.parquet"
            if not path.exists():
                raise RecommendError(f"{path} not found (stage 'corpus' output): the hybrid ranking needs it")
            self.embeddings = read_embeddings(path)
            if self.added is not None:  # the added items' vectors come from the same embedder
                from raygen.corpus.embed import embeddings_array

                self.embeddings = (np.concatenate([self.embeddings[0], self.added.column("item_id").to_numpy()]),
                                   np.concatenate([self.embeddings[1], embeddings_array(self.added)]))
        depth = self.cfg.eval.fusion_depth + max(len(s) for s in seens)
        universe = np.concatenate([self.catalog.item_ids, np.array(sorted(self.content_only), dtype=np.int64)])
        contents = content_rank(histories, universe, *self.embeddings, depth, self.cfg.eval.content_last)
        fused = []
        for row, seen, top in zip(contents, seens, ranked):
            content = [int(i) for i in row if int(i) not in seen][:self.cfg.eval.fusion_depth]
            model = [r["item_id"] for r in top]
            out = []
            for item, score in list(rrf_scores([model, content], [1.0, 1.0]).items())[:k]:
                out.append({"item_id": item, "title": self.titles.get(item) or "", "score": score,
                            "sid": self.sids[item], "model_rank": model.index(item) + 1 if item in model else None,
                            "content_rank": content.index(item) + 1 if item in content else None})
            fused.append(out)
        return fused

    def search(self, query: str, k: int = 10) -> list[dict]:
        """Top-``k`` items for a free-text search ``query`` (STAR's search task, prompted with the first
        ``query2sid`` template as in evaluation); same records as :meth:`top_k`. Meaningful when the
        run trained the search task (``tasks.search_ratio > 0``)."""
        from raygen.tasks.builders import search_prompt
        from raygen.tasks.encode import encode_prompt

        if k < 1:
            raise RecommendError(f"k must be >= 1, got {k}")
        if not query or not query.strip():
            raise RecommendError("the query is empty: give a few words to search for")
        if self.cfg.tasks.search_ratio <= 0:
            log.warning("this run did not train the search task (tasks.search_ratio = 0): results are the "
                        "model's guess from its other tasks")
        return self._external(self._ranked_many([encode_prompt(self.tokenizer, search_prompt(query, self.cfg.tasks))],
                                                k, [set()]))[0]

    def _ranked_many(self, prompts: list[list[int]], k: int, seens: list[set[int]]) -> list[list[dict]]:
        """The model's top ``k`` items after each prompt, the items of its ``seens`` entry left out."""
        beams = min(len(self.catalog.item_ids), k + max(len(s) for s in seens))
        idx, scores = self._beam_search(prompts, beams)
        out = []
        for row_idx, row_scores, seen in zip(idx.tolist(), scores.tolist(), seens):
            recs = []
            for i, s in zip(row_idx, row_scores):
                if i < 0:  # fewer live beams than asked (never with beams <= n_items, kept for safety)
                    continue
                item = int(self.catalog.item_ids[i])
                if item in seen:
                    continue
                recs.append({"item_id": item, "title": self.titles.get(item) or "", "score": float(s),
                             "sid": self.sids[item]})
            out.append(recs[:k])
        return out

    def _beam_search(self, prompts: list[list[int]], beams: int):
        """Catalog row indices and scores [rows, beams], in this process or on the worker pool."""
        import torch

        if self.workers == 0:
            from raygen.generation.beam import constrained_beam_search

            return constrained_beam_search(
                self.model, prompts, self.catalog.sid_matrix, beams, self.pad_id, batch_size=self.cfg.eval.batch_size,
                autocast_dtype=torch.bfloat16 if self.precision["bf16"] else None,
                sid_only=self.cfg.eval.sid_only_head, eos_id=self.tokenizer.eos_token_id)
        if self._pool is None:
            from raygen.generation.pool import RolloutPool
            from raygen.ray_utils import init_ray

            init_ray(self.cfg.ray)
            res = self.cfg.eval.resources
            try:
                self._pool = RolloutPool(self.workers, "hf", str(self.model_dir), self.catalog.sid_matrix, self.pad_id,
                                         num_gpus=res.gpus, num_cpus=res.cpus or 1.0,
                                         backend_kwargs=dict(batch_size=self.cfg.eval.batch_size, bf16=self.cfg.eval.bf16,
                                                             sid_only=self.cfg.eval.sid_only_head,
                                                             eos_id=self.tokenizer.eos_token_id))
            except Exception as e:  # an actor that cannot load the model: say so in one line
                raise RecommendError(f"the {self.workers} generation worker(s) did not start "
                                     f"({_first_line(e)})") from e
            self.precision = self._pool.precision()
            log.info("ranking on %d Ray worker(s): %s", self.workers, self.precision["reason"])
        ro = self._pool.generate(prompts, beams, "beam")
        return ro.items, ro.scores

    def close(self) -> None:
        """Stop the worker pool, if one was started (the in-process model needs nothing)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> "Recommender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def recommend(run_dir: str | Path, history: Sequence[int] | None = None, k: int = 10, exclude_history: bool = False,
              device: str | None = None, query: str | None = None, hybrid: bool | None = None) -> list[dict]:
    """Top-``k`` items for ``history`` (or, given ``query``, for that search query) from the finished run
    in ``run_dir`` (see :class:`Recommender`); ``hybrid`` (histories only): true = fused with the content
    ranking, false = the model alone, None = what the eval stage chose on the valid split."""
    if (history is None) == (query is None):
        raise RecommendError("give either a history or a query")
    if hybrid and query is not None:
        raise RecommendError("the hybrid ranking is for histories (it fuses the content ranking of the last items)")
    rec = Recommender(run_dir, device=device)
    return (rec.search(query, k) if query is not None
            else rec.top_k(history, k, exclude_history=exclude_history, hybrid=hybrid))
