"""Item text embeddings: load a sentence-transformers model offline and embed texts (pure core).

No Ray here: ``raygen.corpus.ray_layer`` wraps these functions in Ray Data actors.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from raygen.data.schema import item_text
from raygen.models import resolve_embedder

TEXT_COLUMNS = ("title", "description", "brand", "categories")


def load_embedder(spec: str, device: str = "cpu") -> Any:
    """A ``SentenceTransformer`` for ``spec`` (alias, HF id already in the local cache, or folder).

    Loads offline: nothing is downloaded at run time (``HF_HUB_OFFLINE=1`` and
    ``local_files_only=True``); remote code is never trusted.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    path = resolve_embedder(spec)
    try:
        return SentenceTransformer(path, device=device, local_files_only=True, trust_remote_code=False)
    except OSError as e:
        where = "folder" if Path(path).exists() else "HF id (not in the local cache?)"
        raise FileNotFoundError(f"cannot load sentence embedder {spec!r} -> {path} ({where}): {e}") from e


def embedding_dim(model: Any) -> int:
    """Output dimension of a loaded SentenceTransformer."""
    # sentence-transformers >= 6 renamed get_sentence_embedding_dimension to get_embedding_dimension.
    fn = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(fn())


def embed_texts(model: Any, texts: Sequence[str], batch_size: int = 64, normalize: bool = True) -> np.ndarray:
    """Embed ``texts`` -> float32 array [N, D] (rows L2-normalised if ``normalize``), in input order."""
    texts = list(texts)
    if not texts:
        return np.zeros((0, embedding_dim(model)), dtype=np.float32)
    emb = model.encode(texts, batch_size=batch_size, normalize_embeddings=normalize,
                       convert_to_numpy=True, show_progress_bar=False)
    return np.ascontiguousarray(emb, dtype=np.float32)


def table_texts(table: pa.Table, max_chars: int = 512) -> list[str]:
    """``item_text`` of every row of an items table (ITEMS_SCHEMA columns), in row order."""
    cols = [c for c in TEXT_COLUMNS if c in table.column_names]
    return [item_text(r, max_chars) for r in table.select(cols).to_pylist()]


def embeddings_table(item_ids: Sequence[int] | pa.Array, emb: np.ndarray) -> pa.Table:
    """Arrow table (item_id int64, embedding fixed_size_list<float32>[D]) from ids and an [N, D] array."""
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(item_ids):
        raise ValueError(f"embeddings of shape {emb.shape} do not match {len(item_ids)} item ids")
    values = pa.array(emb.reshape(-1), type=pa.float32())
    col = pa.FixedSizeListArray.from_arrays(values, emb.shape[1])
    return pa.table({"item_id": pa.array(item_ids, type=pa.int64()), "embedding": col})


def embeddings_array(table: pa.Table) -> np.ndarray:
    """The [N, D] float32 array of an embeddings table's ``embedding`` column (row order kept)."""
    col = table.column("embedding").combine_chunks()
    dim = col.type.list_size
    return col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)
