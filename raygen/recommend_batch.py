"""Top-K recommendations for a file of user histories, the offline batch job (``raygen recommend --histories``).

    raygen recommend --run runs/industrial --histories users.jsonl --out recs.parquet -k 10

Input: JSON Lines (``.gz`` too), one user per line: ``{"user_id": "A1B2", "history": [12, 40, 7]}`` (history
oldest first, in the run's own item ids: integers, or the strings of a table source with string ids, see
:mod:`raygen.data.idmap`; other keys are ignored). An optional ``"target": 99`` (the item the user went on to pick) makes
the job an evaluation as well: the summary then has HR@K / NDCG@K over the ranked rows with a target, with
95 % bootstrap intervals (:func:`raygen.eval.metrics.confidence`), and the rows keep their ``target``. A line that is not such an object is a :class:`DataError` naming the
file, line and field: the file is malformed and nothing is written. A well-formed history the run cannot
rank (an item it does not know, an item added after training whose SID tokens the model lacks, an empty
history) is a counted skip: its output row has no items and ``skipped`` says why, and the summary counts
the skips by kind with the first lines of each, so nothing is dropped silently.

Output: one row per input line, in input order: ``line``, ``user_id`` (a string), ``item_ids``, ``scores``
(the served ranking's, best first), ``skipped`` (null when ranked) and ``target`` (as given, or null). ``.parquet`` (the summary in its
metadata under ``raygen.recommend``) or ``.jsonl``; written to a temporary file beside ``out`` and renamed
when complete, so a killed job leaves no partial output.

The ranking is :meth:`raygen.recommend.Recommender.top_k_many`: rows are ranked ``chunk_rows`` at a time
by one batched constrained beam search (``eval.batch_size`` rows per forward pass) and, when the hybrid is
served, one content ranking per chunk; the served ranking is the eval stage's choice unless ``hybrid`` says
otherwise. It runs in this process (on its GPU when it has one).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raygen.data.common import iter_records
from raygen.data.schema import DataError, SkipLog
from raygen.eval.fusion import HYBRID
from raygen.eval.metrics import PAD_ITEM, confidence, ranking_metrics
from raygen.io import atomic_path
from raygen.recommend import Recommender, RecommendError

OUT_SCHEMA = pa.schema([("line", pa.int64()), ("user_id", pa.string()), ("item_ids", pa.list_(pa.int64())),
                        ("scores", pa.list_(pa.float64())), ("skipped", pa.string()), ("target", pa.int64())])
"""The output of a run with integer item ids; a run whose table source had string ids writes them as strings
(:func:`out_schema`)."""


def out_schema(rec: Recommender) -> pa.Schema:
    """:data:`OUT_SCHEMA`, with string ``item_ids`` / ``target`` where the run's own item ids are strings."""
    if rec.ids.identity or rec.ids.kind == "int64":
        return OUT_SCHEMA
    return OUT_SCHEMA.set(2, pa.field("item_ids", pa.list_(pa.string()))).set(5, pa.field("target", pa.string()))


def _item_id(value) -> bool:
    """An item id as a history or target may give it: an integer, or a non-empty string (a table source's ids)."""
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value.strip() != "")
META_KEY = "raygen.recommend"
"""Parquet metadata key of the run summary (JSON)."""
FORMATS = (".parquet", ".jsonl")


def read_histories(path: str | Path, skips: SkipLog) -> Iterator[tuple[int, str, list[int], int | None]]:
    """``(line, user_id, history, target or None)`` for each non-blank line of a JSON Lines file of user
    histories."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), None, None, "no such file")
    for line, rec in iter_records(path, skips):
        user = rec.get("user_id")
        if isinstance(user, bool) or not isinstance(user, (str, int)) or user == "":
            raise DataError(path.name, line, "user_id", f"a non-empty string or an integer is required, got {user!r}")
        history = rec.get("history")
        if not isinstance(history, list) or not all(_item_id(h) for h in history):
            raise DataError(path.name, line, "history", f"a list of item ids (integers or strings) is required, "
                                                        f"got {history!r}")
        target = rec.get("target")
        if target is not None and not _item_id(target):
            raise DataError(path.name, line, "target", f"an item id (integer or string) is required, got {target!r}")
        yield line, str(user), history, target


class _Writer:
    """Output rows streamed to a temporary file (Parquet row groups or JSON lines)."""

    def __init__(self, tmp: Path, suffix: str, schema: pa.Schema = OUT_SCHEMA):
        self.suffix, self.schema = suffix, schema
        self.parquet = pq.ParquetWriter(tmp, schema) if suffix == ".parquet" else None
        self.text = None if self.parquet else tmp.open("w", encoding="utf-8")

    def write(self, rows: list[dict]) -> None:
        if self.parquet:
            self.parquet.write_table(pa.Table.from_pylist(rows, schema=self.schema))
        else:
            self.text.writelines(json.dumps(r) + "\n" for r in rows)

    def close(self, summary: dict) -> None:
        if self.parquet:
            self.parquet.add_key_value_metadata({META_KEY: json.dumps(summary)})
            self.parquet.close()
        else:
            self.text.close()


def recommend_file(rec: Recommender, histories: str | Path, out: str | Path, k: int = 10,
                   exclude_history: bool = False, hybrid: bool | None = None, chunk_rows: int = 256,
                   progress: bool = True, overwrite: bool = False) -> dict:
    """Rank every history of the file ``histories`` with the loaded run ``rec``; write ``out``; the summary.
    An existing ``out`` is an error unless ``overwrite`` (a file raygen did not write is never replaced
    silently)."""
    from tqdm import tqdm

    histories, out = Path(histories), Path(out)
    if not histories.is_file():
        raise DataError(str(histories), None, None, "no such file")
    if out.suffix not in FORMATS:
        raise RecommendError(f"--out {out}: the file name must end in {' or '.join(FORMATS)}")
    if out.resolve() == histories.resolve():
        raise RecommendError(f"--out {out} is the input file")
    if out.exists() and not overwrite:
        raise RecommendError(f"--out {out} exists: choose another name, or pass --overwrite to replace it")
    if k < 1 or chunk_rows < 1:
        raise RecommendError(f"k and chunk_rows must be >= 1, got {k}, {chunk_rows}")
    use_hybrid = rec.use_hybrid(hybrid)
    input_skips, skipped = SkipLog(), SkipLog()
    pending: list[dict] = []  # output rows in input order; those with "history" still to rank
    counts = {"lines": 0, "ranked": 0, "pending_ranked": 0}
    scored: list[tuple[list[int], int]] = []  # (top k, target) of the ranked rows with a target
    t0 = time.perf_counter()
    with atomic_path(out) as tmp, tqdm(desc="recommend", unit="user", disable=None if progress else True) as bar:
        writer = _Writer(tmp, out.suffix, out_schema(rec))

        def flush() -> None:
            if not pending:
                return
            todo = [r for r in pending if "history" in r]
            if todo:
                recs = rec.top_k_many([r.pop("history") for r in todo], k, exclude_history, use_hybrid)
                for r, top in zip(todo, recs):
                    r["item_ids"], r["scores"] = [x["item_id"] for x in top], [x["score"] for x in top]
                    if r["target"] is not None:  # scored in the run's internal ids (an unknown target: a miss)
                        top_int = [rec.ids.internal(x) for x in r["item_ids"]]
                        target = rec.ids.internal(r["target"])
                        scored.append((top_int + [PAD_ITEM] * (k - len(top_int)), PAD_ITEM - 1 if target is None else target))
            writer.write(pending)
            counts["ranked"] += len(todo)
            counts["pending_ranked"] = 0
            bar.update(len(pending))
            pending.clear()

        try:
            int_ids = pa.types.is_integer(writer.schema.field("target").type)
            for line, user, history, target in read_histories(histories, input_skips):
                counts["lines"] += 1
                if target is not None and int_ids and not isinstance(target, int):
                    raise DataError(histories.name, line, "target", f"an integer item id is required (this run's "
                                                                    f"item ids are integers), got {target!r}")
                row = {"line": line, "user_id": user, "item_ids": [], "scores": [], "skipped": None, "target": target}
                problem = rec.history_problem(history)
                if problem is None:
                    row["history"] = history
                    counts["pending_ranked"] += 1
                else:
                    skipped.add(problem[0], f"{histories.name}:{line}")
                    row["skipped"] = problem[1]
                pending.append(row)
                if counts["pending_ranked"] >= chunk_rows or len(pending) >= 8 * chunk_rows:  # or many skipped lines
                    flush()
            flush()
            if counts["lines"] == 0:
                raise DataError(str(histories), None, None, "no histories (the file has no non-blank line)")
            seconds = time.perf_counter() - t0
            summary = {"run": getattr(rec, "location", str(rec.run_dir)),  # a URI run: as given, not its cache copy
                       "histories": str(histories), "out": str(out), "k": k,
                       "exclude_history": exclude_history, "ranking": HYBRID if use_hybrid else "raygen",
                       "users": counts["lines"], "ranked": counts["ranked"], "skipped": skipped.to_dict(),
                       "input_repairs": input_skips.to_dict(), "precision": rec.precision,
                       "seconds": round(seconds, 2), "users_per_s": round(counts["lines"] / max(seconds, 1e-9), 2)}
            if scored:
                summary["metrics"] = target_metrics(scored, k)
        except BaseException:
            writer.close({})
            raise
        writer.close(summary)
    return summary


def target_metrics(scored: list[tuple[list[int], int]], k: int) -> dict:
    """HR@K / NDCG@K of ranked rows with a target (K in 1, 5, 10 up to ``k``, and ``k``), with 95 % bootstrap
    intervals at ``k``."""
    topk = np.array([top for top, _ in scored], dtype=np.int64).reshape(len(scored), k)
    targets = np.array([t for _, t in scored], dtype=np.int64)
    ks = sorted({x for x in (1, 5, 10) if x <= k} | {k})
    out = {"n": len(scored), **ranking_metrics(topk, targets, ks)}
    for metric in (f"ndcg@{k}", f"hr@{k}"):
        out[f"{metric} ci95"] = confidence({"served": topk}, targets, metric, [])["methods"]["served"]["ci95"]
    return out


def read_summary(path: str | Path) -> dict:
    """The summary stored in a Parquet output of :func:`recommend_file`."""
    meta = pq.read_metadata(path).metadata or {}
    if META_KEY.encode() not in meta:
        raise RecommendError(f"{path} has no {META_KEY} summary (not written by raygen recommend --histories)")
    return json.loads(meta[META_KEY.encode()])
