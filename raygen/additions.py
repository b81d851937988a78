"""Items added to a finished run's catalog after training, without retraining (``raygen add-items``).

    raygen add-items --run runs/industrial --items new_items.jsonl

Each new item (one JSON object per line: ``item_id``, ``title``; optional ``description``, ``brand``,
``categories``) is embedded with the run's corpus embedder (same text, model, truncation and
normalisation as the corpus stage), gets a collision-free SID from the run's trained quantizer
(:func:`raygen.sid.assign.assign_new_items`: existing SIDs never change) and is appended to
``<run>/additions/catalog.parquet``, one file written atomically, the batches' reports in its metadata.
No stage output is touched, so stage keys, pins and finished stages stay valid.

``raygen recommend`` then knows these items: titles, SIDs, the content ranking (so the hybrid can
recommend them from day one) and, where every token of the item's SID is in the model's vocabulary, the
beam search's trie. A trained model rarely ranks an item it never saw as a target (on Industrial no model
ranked any of 184 held-out new items in a top 10: benchmarks/results/new_items_industrial.md), while the
content ranking reaches them at once: that is the route by which new items get recommended until the next
training run.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raygen.data.schema import ITEMS_SCHEMA, DataError
from raygen.io import read_parquet, write_parquet

ADDITIONS_FILE = Path("additions") / "catalog.parquet"
"""Relative to the run folder."""
META_KEY = b"raygen.additions"
"""Parquet metadata key of the batches' reports (a JSON list)."""
OPTIONAL_TEXT = ("description", "brand")


def read_items_file(path: str | Path) -> tuple[pa.Table, dict[int, int]]:
    """The items of a JSON Lines file (ITEMS_SCHEMA columns) and each item id's line number. Blank lines are
    allowed; any other unusable line is a :class:`DataError` naming the file, line and field; keys other
    than the item fields are ignored."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), None, None, "no such file")
    rows, lines = [], {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise DataError(str(path), n, None, f"not a JSON object ({e})") from None
            if not isinstance(obj, dict):
                raise DataError(str(path), n, None, f"expected a JSON object, got {type(obj).__name__}")
            rows.append(_item_row(obj, str(path), n))
            item = rows[-1]["item_id"]
            if item in lines:
                raise DataError(str(path), n, "item_id", f"item {item} is also on line {lines[item]}")
            lines[item] = n
    if not rows:
        raise DataError(str(path), None, None, "no items")
    return pa.Table.from_pylist(rows, schema=ITEMS_SCHEMA), lines


def _item_row(obj: dict, path: str, line: int) -> dict:
    item = obj.get("item_id")
    if not isinstance(item, int) or isinstance(item, bool):
        raise DataError(path, line, "item_id", f"an integer is required, got {item!r}")
    title = obj.get("title")
    if not isinstance(title, str) or not title.strip():
        raise DataError(path, line, "title", f"a non-empty string is required, got {title!r}")
    row = {"item_id": item, "title": title}
    for name in OPTIONAL_TEXT:
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            raise DataError(path, line, name, f"a string is required, got {type(value).__name__}")
        row[name] = value
    cats = obj.get("categories")
    if cats is not None and not (isinstance(cats, list) and all(isinstance(c, str) for c in cats)):
        raise DataError(path, line, "categories", "a list of strings is required")
    row["categories"] = cats
    return row


def in_vocabulary(codes, tokens) -> list[bool]:
    """Per SID row of ``codes`` (``[N, L]`` ints): is every one of its SID tokens in ``tokens`` (a set or a
    tokenizer vocabulary)? The model can only emit items whose tokens it has."""
    from raygen.sid.tokens import sid_token

    return [all(sid_token(lvl, int(c)) in tokens for lvl, c in enumerate(row)) for row in codes]


def read_additions(run_dir: str | Path) -> tuple[pa.Table | None, list[dict]]:
    """The run's added items (ITEMS_SCHEMA columns + ``embedding`` + ``codes``), or None, and the batches'
    reports."""
    path = Path(run_dir) / ADDITIONS_FILE
    if not path.exists():
        return None, []
    try:
        table = read_parquet(path)
        meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"[]"))
    except Exception as e:  # truncated / not Parquet / damaged metadata
        raise DataError(str(path), None, None, f"unreadable ({type(e).__name__}: {e}); it holds only items added "
                                               "with `raygen add-items`: remove it and add them again") from None
    return table, meta


def add_items(run_dir: str | Path, items_path: str | Path, embedder: Any = None) -> dict:
    """Embed, assign SIDs to and store the items of ``items_path`` (see the module doc); the batch's report.
    ``embedder``: a loaded sentence embedder (default: the run's ``corpus.embed_model``, loaded offline)."""
    from raygen.corpus.embed import embed_texts, load_embedder, table_texts
    from raygen.recommend import RecommendError, load_run_config
    from raygen.sid.assign import assign_new_items
    from raygen.sid.quantizer import load_quantizer
    from raygen.sid.stage import load_codes

    from raygen.storage import is_uri

    if is_uri(run_dir):
        return _add_items_uri(str(run_dir), items_path, embedder)
    run = Path(run_dir)
    cfg = load_run_config(run)
    for stage, name in (("data", "items.parquet"), ("corpus", "embeddings.parquet"), ("sids", "codes.parquet")):
        if not (run / stage / name).exists():
            raise RecommendError(f"{run / stage / name} not found: finish the {stage!r} stage (`raygen run`) before "
                                 "adding items")
    new, lines = read_items_file(items_path)
    old, batches = read_additions(run)
    catalog_ids = read_parquet(run / "data" / "items.parquet").column("item_id").to_pylist()
    known = set(catalog_ids) | set(old.column("item_id").to_pylist() if old is not None else [])
    clash = [i for i in new.column("item_id").to_pylist() if i in known]
    if clash:
        raise DataError(str(items_path), lines[clash[0]], "item_id",
                        f"item {clash[0]} is already in the run's catalog ({len(clash)} such item(s) in the file)")
    t0 = time.perf_counter()
    model = embedder if embedder is not None else load_embedder(cfg.corpus.embed_model)
    X = embed_texts(model, table_texts(new, cfg.corpus.embed_max_chars), cfg.corpus.embed_batch_size,
                    cfg.corpus.normalize)
    dim = pq.read_schema(run / "corpus" / "embeddings.parquet").field("embedding").type.list_size
    if X.shape[1] != dim:
        raise RecommendError(f"the embedder gives {X.shape[1]}-d vectors, the run's corpus embeddings are {dim}-d: "
                             f"not the run's corpus.embed_model ({cfg.corpus.embed_model})")
    ids, codes = load_codes(run / "sids")
    if old is not None:
        ids = np.concatenate([ids, old.column("item_id").to_numpy()])
        codes = np.concatenate([codes, np.array(old.column("codes").to_pylist(), dtype=np.int64)])
    new_ids = new.column("item_id").to_numpy()
    new_codes, report = assign_new_items(load_quantizer(run / "sids"), X, new_ids, codes, ids)
    # the lm stage gives the model exactly the tokens of sids/tokens.parquet
    in_vocab = in_vocabulary(new_codes, set(read_parquet(run / "sids" / "tokens.parquet").column("token").to_pylist()))
    table = new.append_column("embedding", pa.array(list(X), pa.list_(pa.float32(), X.shape[1]))) \
               .append_column("codes", pa.array(new_codes.tolist(), pa.list_(pa.int64())))
    if old is not None:
        table = pa.concat_tables([old.replace_schema_metadata(None).cast(table.schema), table])
    batch = {"file": str(items_path), "added_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "n_added": int(len(new_ids)), "n_in_model_vocabulary": int(sum(in_vocab)),
             "content_only_ids": [int(i) for i, ok in zip(new_ids, in_vocab) if not ok],
             "assignment": report, "seconds": round(time.perf_counter() - t0, 2)}
    batches = [*batches, batch]
    write_parquet(run / ADDITIONS_FILE, table.replace_schema_metadata({META_KEY: json.dumps(batches).encode()}))
    return {**batch, "n_additions_total": table.num_rows}


def _add_items_uri(location: str, items_path: str | Path, embedder: Any = None) -> dict:
    """:func:`add_items` on a URI run: holding the run lock, work on a local copy (the run's read-only
    snapshot linked in, its additions copied), then write the new additions file back in one PUT (atomic
    on an object store): a failed batch changes nothing in the run."""
    import os
    import shutil
    import tempfile

    from raygen import storage
    from raygen.recommend import local_run
    from raygen.runlock import RunLock

    with RunLock(location), tempfile.TemporaryDirectory(prefix="raygen-add-items-") as tmp:
        snap, work = local_run(location), Path(tmp) / "run"
        work.mkdir()
        for entry in snap.iterdir():
            if entry.name == "additions":
                shutil.copytree(entry, work / entry.name)
            else:
                os.symlink(entry, work / entry.name)
        report = add_items(work, items_path, embedder)
        storage.write_bytes(storage.join(location, ADDITIONS_FILE.as_posix()), (work / ADDITIONS_FILE).read_bytes())
    return report
