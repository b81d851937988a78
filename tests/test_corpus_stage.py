"""Corpus stage helpers that need no Ray: config checks, metrics, block layout of the Ray passes."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from raygen.configbase import ConfigError, Resources, from_dict
from raygen.corpus.config import CorpusConfig
from raygen.corpus.ray_layer import KEYWORDS_SCHEMA, _blocks, _by_length, actor_cpus
from raygen.corpus.stage import keyword_metrics


def kw_table(sources: list[str], lengths: list[int] | None = None) -> pa.Table:
    lengths = lengths or [2] * len(sources)
    return pa.table({"item_id": list(range(10, 10 + len(sources))),
                     "keywords": [[f"k{j}" for j in range(n)] for n in lengths], "source": sources},
                    schema=KEYWORDS_SCHEMA)


def test_keyword_metrics_counts_teacher_and_fallback():
    t = kw_table(["teacher", "fallback", "teacher", "fallback", "fallback"], [3, 2, 3, 0, 1])
    m = keyword_metrics(t, CorpusConfig(keyword_backend="hf", keyword_max_items=3))
    assert m["n_teacher_asked"] == 3 and m["n_teacher"] == 2 and m["n_fallback"] == 3
    assert m["n_teacher_unusable"] == 1 and m["fallback_after_teacher_ids_sample"] == [11]
    assert m["teacher_usable_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["mean_keywords_per_item"] == pytest.approx(9 / 5) and m["n_items_without_keywords"] == 1

    everyone = keyword_metrics(t, CorpusConfig(keyword_backend="hf"))
    assert everyone["n_teacher_asked"] == 5 and everyone["fallback_after_teacher_ids_sample"] == [11, 13, 14]
    none = keyword_metrics(kw_table(["fallback"] * 3), CorpusConfig(keyword_backend="fallback", keyword_max_items=2))
    assert none["n_teacher_asked"] == 0 and none["teacher_usable_rate"] is None and none["n_fallback"] == 3


@pytest.mark.parametrize("key, value", [("embed_batch_size", 0), ("n_keywords", 0), ("keyword_max_items", -1),
                                        ("embed_resources.cpus", -1.0), ("keyword_resources.count", 0),
                                        ("embed_resources.gpus", -0.5)])
def test_corpus_config_rejects_bad_values(key, value):
    data = {key: value}
    if "." in key:
        block, leaf = key.split(".")
        data = {block: {leaf: value}}
    with pytest.raises(ConfigError, match=f"corpus.{key}"):
        from_dict(CorpusConfig, data, prefix="corpus")


def test_corpus_config_defaults_are_cpu_friendly():
    c = from_dict(CorpusConfig, {})
    assert c.embed_resources == Resources(count=1, cpus=0.0, gpus=0.0) == c.keyword_resources  # cpus 0 = auto
    # a block given in part keeps the section's defaults (cpus 0 = auto), not Resources' own (1 CPU)
    assert from_dict(CorpusConfig, {"embed_resources": {"gpus": 0.25}}).embed_resources == Resources(1, 0.0, 0.25)
    with pytest.raises(ConfigError, match="keyword_backend"):
        from_dict(CorpusConfig, {"keyword_backend": "openai"})


@pytest.mark.parametrize("n, batch, conc", [(100, 8, 1), (100, 8, 2), (7, 8, 1), (1000, 64, 1), (64, 16, 4)])
def test_blocks_are_whole_batches_and_cover_every_row(n, batch, conc):
    t = pa.table({"item_id": np.arange(n)})
    blocks = _blocks(t, batch, conc)
    assert pa.concat_tables(blocks).column("item_id").to_pylist() == list(range(n))
    assert all(b.num_rows % batch == 0 for b in blocks[:-1])
    assert len(blocks) >= min(conc, -(-n // batch))  # every actor can get work when there is enough
    assert len(blocks) <= 16 * conc + 1


def test_by_length_sorts_longest_first_and_teacher_rows_first():
    t = pa.table({"item_id": [1, 2, 3, 4, 5]})
    assert _by_length(t, [3, 9, 1, 9, 5]).column("item_id").to_pylist() == [2, 4, 5, 1, 3]
    first = np.array([False, False, True, True, False])
    assert _by_length(t, [3, 9, 1, 9, 5], first=first).column("item_id").to_pylist() == [4, 3, 2, 5, 1]


def test_actor_cpus_explicit_and_gpu_defaults():
    assert actor_cpus(Resources(count=3, cpus=2.5, gpus=0.0)) == 2.5
    assert actor_cpus(Resources(count=2, cpus=0.0, gpus=1.0)) == 1.0


def test_teacher_actor_adds_counted_queries_and_the_stage_splits_them():
    """One teacher actor call writes keywords and queries; queries.parquet is long, split per item, and
    its metrics count every item's source (a fallback-only backend: all 'fallback', none malformed)."""
    from raygen.corpus.ray_layer import NODE_COLUMN, QUERY_FIELDS, KeywordActor
    from raygen.corpus.stage import queries_metrics, queries_table

    cfg = CorpusConfig(keyword_backend="fallback", n_queries=5)
    items = pa.table({"item_id": [3, 1], "title": ["Steel hex bolt", "Leather wallet"], "description": ["", ""],
                      "brand": ["Bolty", ""], "categories": [["Tools"], ["Bags"]],
                      "use_teacher": [True, True], "ask_queries": [True, False]})
    out = KeywordActor(cfg, num_threads=1)(items)
    # the actor tags its batch with the node it ran on (the stage's metrics list the nodes; _collect drops it)
    assert out.column_names == KEYWORDS_SCHEMA.names + QUERY_FIELDS.names + [NODE_COLUMN]
    assert len(set(out.column(NODE_COLUMN).to_pylist())) == 1
    out = out.drop_columns([NODE_COLUMN])
    assert all(len(q) == 5 for q in out.column("queries").to_pylist())
    queries = queries_table(out, cfg)
    assert queries.num_rows == 10 and set(queries.column("item_id").to_pylist()) == {1, 3}
    m = queries_metrics(out, queries, cfg)
    assert m["query_items_fallback"] == 2 and m["query_items_malformed"] == 0 and m["queries_from_teacher"] == 0
    assert m["queries_by_split"] == {"train": 6, "valid": 2, "test": 2} and m["query_items_teacher_asked"] == 0
    assert KeywordActor(CorpusConfig(keyword_backend="fallback", n_queries=0), 1)(items).column_names == \
        KEYWORDS_SCHEMA.names + [NODE_COLUMN]
