"""Corpus stage through a local Ray: embedding and keyword actor pools, stage artifacts, metrics."""
from __future__ import annotations

import importlib.util
import types

import numpy as np
import pyarrow as pa
import pytest

from raygen.configbase import Resources
from raygen.corpus.config import CorpusConfig
from raygen.corpus.embed import embed_texts, embeddings_array, load_embedder, table_texts
from raygen.corpus.keywords import fallback_keywords
from raygen.data.schema import items_table
from raygen.io import read_parquet, write_json, write_parquet
from raygen.runner import SUCCESS, StageContext

pytestmark = pytest.mark.integration

WORDS = ("steel brass copper wooden plastic red blue heavy small large cordless digital "
         "screw bolt drill saw hammer tape glue brush meter valve pump relay lamp").split()


def synthetic_items(n: int = 50) -> pa.Table:
    rng = np.random.default_rng(0)
    rows = []
    for i in rng.permutation(n):  # unsorted, non-contiguous ids
        w = [WORDS[j] for j in rng.choice(len(WORDS), 4, replace=False)]
        rows.append({"item_id": int(1000 + 7 * i), "title": f"{w[0]} {w[1]} {w[2]}", "brand": "acme" if i % 3 else "",
                     "categories": [w[3]] if i % 2 else [],
                     "description": "" if i % 5 == 0 else f"A {w[0]} {w[2]} for the {w[3]}. " * int(1 + i % 4)})
    return items_table(rows)


@pytest.fixture(scope="module")
def tiny_st_dir(tmp_path_factory, tiny_tokenizer_json):
    """A tiny random sentence-transformers model (BERT, hidden 32, mean pooling, normalise) on disk."""
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    import torch

    torch.manual_seed(0)
    hf_dir = tmp_path_factory.mktemp("tiny_bert")
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tiny_tokenizer_json),
                                  unk_token="<|endoftext|>", pad_token="<pad>")
    tok.save_pretrained(hf_dir)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
              ).save_pretrained(hf_dir)
    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Normalize, Pooling, Transformer

    word = Transformer(str(hf_dir), max_seq_length=96)
    dim = (getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension)()
    st = SentenceTransformer(modules=[word, Pooling(dim, "mean"), Normalize()])
    st_dir = tmp_path_factory.mktemp("tiny_st")
    st.save(str(st_dir))
    return str(st_dir)


def test_run_corpus_two_embed_actors_teacher_then_fallback(ray_local, tiny_st_dir, tiny_model_dir, tmp_path):
    """One stage run: 2 embedding actors, a (tiny, random) HF teacher for the first 6 items and
    fallback keywords for the rest. Few Ray passes on purpose: each starts fresh actor processes."""
    from raygen.corpus.stage import run_corpus
    from raygen.pipeline import stage

    items = synthetic_items()
    (tmp_path / "data").mkdir()
    write_parquet(tmp_path / "data" / "items.parquet", items)
    write_json(tmp_path / "data" / SUCCESS, {"key": "x"})
    out = tmp_path / ".corpus.tmp"
    out.mkdir()
    corpus = CorpusConfig(embed_model=tiny_st_dir, embed_batch_size=8, embed_resources=Resources(count=2, cpus=0),
                          keyword_backend="hf", teacher_model=str(tiny_model_dir), keyword_batch_size=4,
                          keyword_max_items=6, max_new_tokens=6, n_keywords=3, n_queries=5, query_max_items=4,
                          query_max_new_tokens=8)
    metrics = run_corpus(StageContext(cfg=types.SimpleNamespace(corpus=corpus), run_dir=tmp_path, out=out,
                                      stage="corpus"))

    emb, kw = read_parquet(out / "embeddings.parquet"), read_parquet(out / "keywords.parquet")
    ordered = items.sort_by("item_id")
    ids = ordered.column("item_id").to_pylist()
    assert emb.column("item_id").to_pylist() == ids and kw.column("item_id").to_pylist() == ids
    assert emb.schema.field("embedding").type == pa.list_(pa.float32(), 32)
    assert kw.schema == pa.schema([("item_id", pa.int64()), ("keywords", pa.list_(pa.string())),
                                   ("source", pa.string())])
    # Row alignment: each item's vector equals the one computed directly from its own text.
    direct = embed_texts(load_embedder(tiny_st_dir), table_texts(ordered, corpus.embed_max_chars), batch_size=50)
    np.testing.assert_allclose(embeddings_array(emb), direct, atol=1e-5)
    # The random tiny teacher's answers are unusable, so every item holds its fallback keywords.
    assert kw.column("keywords").to_pylist() == [fallback_keywords(r, 3) for r in ordered.to_pylist()]
    assert set(kw.column("source").to_pylist()) == {"fallback"}

    assert metrics["n_items"] == 50 and metrics["dim"] == 32
    assert metrics["n_teacher_asked"] == 6 and metrics["n_teacher"] == 0 and metrics["n_fallback"] == 50
    assert metrics["n_teacher_unusable"] == 6 and metrics["teacher_usable_rate"] == 0.0
    assert metrics["fallback_after_teacher_ids_sample"] == ids[:6]
    assert metrics["embed_items_per_s"] > 0 and metrics["keyword_items_per_s"] > 0
    # search queries from the same actors: the first 4 items asked (a random teacher: counted whatever it
    # says), the rest fallback; every item gets 5 queries, split 3/1/1
    queries = read_parquet(out / "queries.parquet")
    assert queries.num_rows == 250 and metrics["n_queries"] == 250
    assert metrics["query_items_teacher_asked"] == 4 and metrics["query_items_fallback"] >= 46
    assert metrics["query_items_teacher"] + metrics["query_items_mixed"] + metrics["query_items_fallback"] == 50
    assert metrics["queries_by_split"] == {"train": 150, "valid": 50, "test": 50}
    assert 0 < metrics["mean_keywords_per_item"] <= 3
    assert stage("corpus").deps == ("data",) and stage("corpus").sections == ("corpus",)


def test_keyword_items_fallback_backend_and_bad_input(ray_local):
    from raygen.corpus.ray_layer import keyword_items

    items = synthetic_items(12)
    out = keyword_items(items, CorpusConfig(keyword_backend="fallback", keyword_batch_size=5, n_keywords=2))
    from raygen.corpus.queries import fallback_queries
    from raygen.corpus.ray_layer import KEYWORDS_SCHEMA

    rows = items.sort_by("item_id").to_pylist()
    assert out.select(KEYWORDS_SCHEMA.names).to_pylist() == [
        {"item_id": r["item_id"], "keywords": fallback_keywords(r, 2), "source": "fallback"} for r in rows]
    assert out.column("queries").to_pylist() == [fallback_queries(r, 5) for r in rows]  # corpus.n_queries = 5
    with pytest.raises(ValueError, match="no items"):
        keyword_items(items.slice(0, 0), CorpusConfig(keyword_backend="fallback"))


def test_teacher_actor_killed_mid_stream_loses_and_duplicates_nothing(ray_local, tmp_path, monkeypatch):
    """A keyword actor dies on its 2nd batch (``os._exit``); Ray Data restarts it and retries the batch:
    every item comes back exactly once, with the same keywords as without the fault."""
    from raygen.corpus.ray_layer import keyword_items
    from raygen.faults import MARKER, site_var

    items = synthetic_items(30)
    cfg = CorpusConfig(keyword_backend="fallback", keyword_batch_size=5, n_keywords=2, n_queries=0,
                       keyword_resources=Resources(count=2, cpus=0.5))
    clean = keyword_items(items, cfg)
    monkeypatch.setenv(site_var("TEACHER_BATCH"), "2")
    monkeypatch.setenv(MARKER, str(tmp_path / "fault.marker"))
    faulty = keyword_items(items, cfg)
    assert (tmp_path / "fault.marker").exists()  # an actor did die
    assert faulty.num_rows == 30 and faulty.equals(clean)  # sorted by item_id: none lost, none twice


def test_keyword_actor_with_a_scripted_teacher_keeps_parsed_keywords(ray_local, scripted_teacher_dir):
    """The Ray Data KeywordActor with a real (scripted) HF teacher: grounded answers become the item's
    keywords (source 'teacher'), the others fall back; every item exactly once, in item_id order."""
    from raygen.corpus.ray_layer import keyword_items

    rows = [{"item_id": 10 + i, "title": "Leather wallet and steel knife set" if i % 2 == 0 else "Cotton socks",
             "description": "", "brand": "acme", "categories": ["home"]} for i in range(8)]
    items = items_table(rows[::-1])
    out = keyword_items(items, CorpusConfig(keyword_backend="hf", teacher_model=str(scripted_teacher_dir),
                                            keyword_batch_size=3, max_new_tokens=16, n_keywords=3))
    got = out.to_pylist()
    assert [r["item_id"] for r in got] == [10 + i for i in range(8)]
    for i, r in enumerate(got):
        if i % 2 == 0:
            assert (r["keywords"], r["source"]) == (["leather wallet", "steel knife"], "teacher")
        else:  # the reply is not grounded in "Cotton socks"
            assert (r["keywords"], r["source"]) == (fallback_keywords(rows[i], 3), "fallback")


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_vllm_teacher_in_the_ray_data_actor_pool(ray_local, scripted_teacher_dir, scripted_reply):
    """The keyword teacher on a vLLM engine inside the Ray Data actor pool (``corpus.keyword_backend: vllm``, CPU
    build): the scripted model answers "leather wallet, steel knife" to everything; grounding keeps those
    keywords only for items whose text holds them, every other item is counted as a fallback."""
    from raygen.corpus.ray_layer import keyword_items

    rows = [{"item_id": 10 + i, "title": title, "brand": "acme", "categories": ["tools"], "description": desc}
            for i, (title, desc) in enumerate([("Leather wallet", "with a steel knife inside"),
                                               ("Brass valve", "for a garden pump"),
                                               ("Steel knife and leather wallet set", ""),
                                               ("Copper relay", "12 volt")])]
    cfg = CorpusConfig(keyword_backend="vllm", teacher_model=str(scripted_teacher_dir), teacher_bf16=False,
                       keyword_batch_size=4, n_keywords=3, max_new_tokens=16, n_queries=0,
                       keyword_resources=Resources(count=1, cpus=1))
    out = keyword_items(items_table(rows), cfg)
    assert out.column("item_id").to_pylist() == [10, 11, 12, 13]
    assert out.column("source").to_pylist() == ["teacher", "fallback", "teacher", "fallback"]
    teacher_kw = scripted_reply.split(", ")
    assert out.column("keywords").to_pylist()[0] == teacher_kw and out.column("keywords").to_pylist()[2] == teacher_kw
    assert out.column("keywords").to_pylist()[1] == fallback_keywords(rows[1], 3)
