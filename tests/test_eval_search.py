"""Search evaluation core: BM25 baseline, recall naming, query rows in the trained prompt format."""
import numpy as np
import pyarrow as pa

from raygen.data.schema import SkipLog
from raygen.eval.search import BM25, search_rows, search_table

ITEMS = pa.table({"item_id": [10, 11, 12], "title": ["steel hex bolt", "leather wallet", "hex key set"],
                  "brand": ["bolty", "hide", "bolty"], "categories": [["fasteners"], ["bags"], ["tools"]],
                  "description": ["a bolt for machines", "slim wallet", "allen keys"]})


def test_bm25_ranks_the_matching_item_first_and_weighs_rare_terms():
    bm = BM25(ITEMS)
    top = bm.rank(["leather wallet", "hex bolt", "allen hex key", "zzz unknown"], k=3)
    assert top[0, 0] == 11 and top[1, 0] == 10 and top[2, 0] == 12
    assert top[3].tolist() == [10, 11, 12]  # no known term: item order, not a lucky guess
    s = bm.scores("hex")
    assert s[0] > 0 and s[2] > 0 and s[1] == 0
    assert bm.scores("wallet")[1] > s[0]       # a term in one item weighs more than one in two (idf)


def test_search_table_reports_recall_at_k():
    m = search_table(np.array([[10, 11], [12, 10]]), np.array([10, 10]), np.array([10, 11, 12]), ks=(1, 2))
    assert m["recall@1"] == 0.5 and m["recall@2"] == 1.0 and "hr@1" not in m and m["n"] == 2


def test_search_rows_use_the_first_template_and_count_unknown_items(tiny_tokenizer, tiny_catalog):
    from raygen.tasks.config import TasksConfig
    from raygen.tasks.encode import encode_prompt
    from raygen.tasks.builders import search_prompt

    codes = tiny_catalog["codes"]
    known = codes.column("item_id").to_pylist()[:2]
    queries = pa.table({"item_id": [known[0], known[1], 999_999, known[0]], "query": ["a", "b", "c", "d"],
                        "split": ["test", "test", "test", "train"]})
    skips = SkipLog()
    rows, texts = search_rows(queries, codes, tiny_tokenizer, TasksConfig(), "test", skips=skips)
    assert texts == ["a", "b"] and rows.targets.tolist() == known and rows.row_ids.tolist() == [0, 1]
    assert rows.prompt_ids[0] == encode_prompt(tiny_tokenizer, search_prompt("a", TasksConfig()))
    assert skips.to_dict()["total"] == 1
