"""The sids stage end to end on a fake corpus stage, through raygen.runner."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
import pyarrow as pa
import pytest

from raygen.data.schema import DataError
from raygen.io import read_json, read_parquet, write_parquet
from raygen.runner import Stage, run_stages
from raygen.sid.assign import assign_from_run
from raygen.sid.config import SidConfig
from raygen.sid.metrics import collision_rate
from raygen.sid.stage import load_codes, load_quantizer, read_embeddings, run_sids
from raygen.sid.tokens import sid_token
from raygen.generation.trie import SidTrie

N, D = 300, 16
WORDS = ["drill", "saw", "glue", "tape", "wrench", "paint", "brush", "nail"]


def fake_embeddings(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((6, D))[rng.integers(6, size=N)] + 0.8 * rng.standard_normal((N, D))
    X[10:14] = X[9]  # five identical items: only the extra level can separate them
    return X.astype(np.float32)


def embeddings_table(ids, X):
    return pa.table({"item_id": pa.array(ids, pa.int64()),
                     "embedding": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel(), pa.float32()), X.shape[1])})


def fake_corpus(ctx):
    ids = np.arange(N)[::-1] * 3 + 100  # not sorted, not contiguous
    write_parquet(ctx.out / "embeddings.parquet", embeddings_table(ids, fake_embeddings()))
    kw_ids = list(ids[1:]) + [99999]  # first item has no keywords; one row for an unknown item
    kws = [[WORDS[i % 8], "tool"] for i in range(len(kw_ids))]
    write_parquet(ctx.out / "keywords.parquet", pa.table({
        "item_id": pa.array(kw_ids, pa.int64()), "keywords": pa.array(kws, pa.list_(pa.string())),
        "source": pa.array(["fallback"] * len(kw_ids))}))
    return {}


def run(tmp_path, **sids):
    cfg = SimpleNamespace(sids=SidConfig(**{"levels": 3, "codebook_size": 8, "kmeans_iters": 10, **sids}))
    stages = [Stage("corpus", fake_corpus), Stage("sids", run_sids, deps=("corpus",), sections=("sids",))]
    return run_stages(cfg, stages, tmp_path)["sids"]["metrics"], tmp_path / "sids"


@pytest.mark.parametrize("method", ["rqkmeans", "rqvae"])
def test_stage_end_to_end(tmp_path, method):
    m, out = run(tmp_path, method=method, latent_dim=8, hidden_dims=[32], epochs=15, batch_size=64)
    assert m["n_items"] == N and m["dim"] == D
    assert m["collision_rate"] == 0.0 and m["collision_rate_before"] > 0
    assert m["collision_rate_sinkhorn"] < m["collision_rate_before"]
    assert m["extra_level_added"] and m["levels_final"] == 4
    assert len(m["utilization"]) == len(m["perplexity"]) == 3
    assert all(0 < u <= 1 for u in m["utilization"]) and all(1 <= p <= 8 for p in m["perplexity"])
    assert m["recon_error"] > 0 and 0 < m["recon_rel"] < 1
    assert m["skipped"]["counts"] == {"keywords_for_unknown_item": 1, "item_without_keywords": 1}

    ids, codes = load_codes(out)
    assert read_parquet(out / "codes.parquet").schema.field("codes").type == pa.list_(pa.int32())
    assert ids.tolist() == sorted(ids.tolist()) and len(ids) == N and codes.shape == (N, 4)
    assert collision_rate(codes) == 0.0
    dup = np.isin(ids, (np.arange(N)[::-1] * 3 + 100)[9:14])
    assert sorted(codes[dup, 3].tolist()) == [0, 1, 2, 3, 4] and len({tuple(c[:3]) for c in codes[dup]}) == 1

    tokens = read_parquet(out / "tokens.parquet").to_pylist()
    expected = {sid_token(lvl, int(c)) for lvl in range(4) for c in np.unique(codes[:, lvl])}
    assert {t["token"] for t in tokens} == expected
    assert all(t["description"].startswith("items about: ") for t in tokens)
    assert all(len(t["keywords"]) <= 8 for t in tokens)
    # "tool" is on (almost) every item, so it ranks below every cluster-specific word
    assert all(t["keywords"].index("tool") == len(t["keywords"]) - 1 for t in tokens if "tool" in t["keywords"])
    assert sum(len(t["keywords"]) > 1 for t in tokens if t["level"] == 0) > 0

    trie = SidTrie.build(torch.as_tensor(codes))  # the generation trie accepts the codes: one item per SID
    assert trie.n_levels == 4 and int(trie.leaf_item.max()) == len(ids) - 1

    q = load_quantizer(out)
    assert q.method == method and read_json(out / "quantizer.json")["extra"]["levels_final"] == 4
    X = fake_embeddings()
    new_codes, rep = assign_from_run(out, X[:20] + 0.01, np.arange(20) + 10_000)
    assert rep["n_new"] == 20 and collision_rate(np.concatenate([codes, new_codes])) == 0.0


def test_stage_switches(tmp_path):
    m, _ = run(tmp_path, sinkhorn=False)
    assert m["sinkhorn_rounds"] == 0 and m["items_reassigned"] == 0
    assert m["collision_rate_sinkhorn"] == m["collision_rate_before"] > 0
    assert m["extra_level_added"] and m["collision_rate"] == 0.0
    with pytest.raises(ValueError, match="extra_level"):  # the duplicates cannot be separated otherwise
        run(tmp_path / "b", codebook_size=64, extra_level=False)


def test_bad_embeddings_name_file_and_row(tmp_path):
    X = np.ones((3, 4), np.float32)
    X[2, 1] = np.nan
    path = tmp_path / "embeddings.parquet"
    write_parquet(path, embeddings_table([1, 2, 3], X))
    with pytest.raises(DataError, match=r"embeddings.parquet:2 field 'embedding'.*NaN"):
        read_embeddings(path)
    write_parquet(path, embeddings_table([1, 2, 1], np.ones((3, 4), np.float32)))
    with pytest.raises(DataError, match="duplicate item id 1"):
        read_embeddings(path)
    write_parquet(path, pa.table({"item_id": [1, 2], "embedding": [[1.0, 2.0], [1.0]]}))
    with pytest.raises(DataError, match=r":1 field 'embedding'.*length 1"):
        read_embeddings(path)
