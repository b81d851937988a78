"""Synthetic catalog (determinism, sizes, splits, behaviour that follows text), load_data and validate_tables."""
from __future__ import annotations

import json
from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from raygen.configbase import ConfigError, from_dict
from raygen.data import DataConfig, SyntheticConfig, load_data, validate_tables
from raygen.data.schema import ITEMS_SCHEMA, SAMPLES_SCHEMA, DataError, item_text
from raygen.data.synthetic import load_synthetic
from raygen.eval.baselines import popularity_rank
from raygen.eval.metrics import ranking_metrics


@pytest.fixture(scope="module")
def default():
    return load_data(DataConfig())


def _by_user(samples: pa.Table) -> dict[str, dict[str, list]]:
    out: dict = defaultdict(lambda: defaultdict(list))
    for r in samples.to_pylist():
        out[r["user_id"]][r["split"]].append((r["history"], r["target"]))
    return out


def _sequences(samples: pa.Table) -> dict[str, list[int]]:
    """Each user's full sequence, read back from its test sample (max_history large enough)."""
    return {u: s["test"][0][0] + [s["test"][0][1]] for u, s in _by_user(samples).items()}


def test_sizes_schema_and_report(default):
    items, samples, report = default
    cfg = SyntheticConfig()
    assert items.schema == ITEMS_SCHEMA and samples.schema == SAMPLES_SCHEMA
    assert items["item_id"].to_pylist() == list(range(cfg.n_items))
    seqs = _sequences(samples)
    assert len(seqs) == cfg.n_users
    assert all(cfg.min_seq_len <= len(s) <= cfg.max_seq_len for s in seqs.values())
    n_interactions = sum(len(s) for s in seqs.values())
    assert report["interactions"] == n_interactions
    assert report["samples"] == {"train": n_interactions - 3 * cfg.n_users, "valid": cfg.n_users, "test": cfg.n_users}
    assert report["items"] == cfg.n_items and report["users"] == cfg.n_users
    assert report["skips"]["total"] == 0
    json.dumps(report)
    rows = items.to_pylist()
    assert len({r["title"] for r in rows}) > 0.95 * len(rows)
    assert all(len(r["categories"]) == 2 and r["brand"] and len(r["description"]) > 60 for r in rows)
    assert len({r["categories"][0] for r in rows}) == cfg.n_categories
    assert len({r["categories"][1] for r in rows}) == 4 * cfg.n_categories


def test_deterministic_for_a_seed(default):
    items, samples, _ = load_synthetic(DataConfig())
    assert items.equals(default[0]) and samples.equals(default[1])
    other_items, other_samples, _ = load_synthetic(DataConfig(seed=1))
    assert not other_items.equals(items) and not other_samples.equals(samples)


def test_leave_one_out_splits(default):
    _, samples, _ = default
    for user, s in _by_user(samples).items():
        assert len(s["valid"]) == 1 and len(s["test"]) == 1, user
        (vh, vt), (th, tt) = s["valid"][0], s["test"][0]
        assert th == vh + [vt]
        seq = th + [tt]
        assert len(set(seq)) == len(seq)  # no item twice in one sequence
        assert s["train"] == [(seq[:i], seq[i]) for i in range(1, len(seq) - 2)]


def test_history_truncation():
    _, samples, _ = load_synthetic(DataConfig(max_history=3))
    _, full, _ = load_synthetic(DataConfig())
    hist = samples["history"].to_pylist()
    assert max(len(h) for h in hist) == 3
    assert hist == [h[-3:] for h in full["history"].to_pylist()]
    assert samples["target"].equals(full["target"])


def test_other_sizes():
    cfg = DataConfig(seed=3, synthetic=SyntheticConfig(n_items=60, n_users=25, n_categories=12, n_tastes=2,
                                                      min_seq_len=3, max_seq_len=4))
    items, samples, report = load_data(cfg)
    assert items.num_rows == 60 and report["users"] == 25
    assert len({c[0] for c in items["categories"].to_pylist()}) == 12
    assert report["samples"]["valid"] == report["samples"]["test"] == 25


def test_behaviour_follows_item_text(default):
    items, samples, _ = default
    rows = items.to_pylist()
    cat = [r["categories"][0] for r in rows]
    sub = [r["categories"][1] for r in rows]
    pairs = [(h[-1], t) for h, t in zip(samples["history"].to_pylist(), samples["target"].to_pylist())]
    shares = np.array(list(Counter(cat).values())) / len(cat)
    chance = float((shares ** 2).sum())  # ~1/8 for 8 even categories
    same_cat = np.mean([cat[a] == cat[b] for a, b in pairs])
    assert same_cat > 4 * chance, (same_cat, chance)
    assert np.mean([sub[a] == sub[b] for a, b in pairs]) > 0.2  # chance ~ 1/32

    # A text-only recommender (TF-IDF cosine to the last 3 history items) beats random by a lot.
    tfidf = TfidfVectorizer().fit_transform([item_text(r) for r in rows])
    sim = (tfidf @ tfidf.T).toarray()
    test = [r for r in samples.to_pylist() if r["split"] == "test"]
    hits = 0
    for r in test:
        score = sim[r["history"][-3:]].sum(axis=0)
        score[r["history"]] = -np.inf
        hits += r["target"] in np.argsort(-score)[:10]
    hit10, random_hit10 = hits / len(test), 10 / len(rows)
    assert hit10 > 5 * random_hit10, (hit10, random_hit10)


def test_transitions_drive_same_subcategory_pairs():
    def same_sub(p: float) -> float:
        items, samples, _ = load_synthetic(DataConfig(synthetic=SyntheticConfig(transition_prob=p)))
        sub = [c[1] for c in items["categories"].to_pylist()]
        return np.mean([sub[h[-1]] == sub[t] for h, t in zip(samples["history"].to_pylist(), samples["target"].to_pylist())])

    assert same_sub(0.9) > same_sub(0.0) + 0.2


def _split(samples: pa.Table, name: str) -> tuple[list[list[int]], np.ndarray]:
    rows = [r for r in samples.to_pylist() if r["split"] == name]
    return [r["history"] for r in rows], np.array([r["target"] for r in rows])


def _markov_rank(train_hist, train_tgt, histories, k: int = 10) -> np.ndarray:
    """First-order transition counts (last history item -> target), backed off to popularity."""
    follow: dict = defaultdict(Counter)
    for h, t in zip(train_hist, train_tgt):
        follow[h[-1]][int(t)] += 1
    popular = popularity_rank(train_hist, train_tgt, 1, k)[0].tolist()
    out = []
    for h in histories:
        ranked = [i for i, _ in sorted(follow[h[-1]].items(), key=lambda kv: (-kv[1], kv[0]))][:k]
        out.append(ranked + [i for i in popular if i not in ranked][: k - len(ranked)])
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 1])
def test_transitions_beat_popularity(seed):
    """The sequential signal dominates: a first-order Markov model fitted on the train split
    clearly beats most-popular on the test split, while popularity stays informative and the
    next item is far from fully predictable."""
    _, samples, _ = load_synthetic(DataConfig(seed=seed))
    train_hist, train_tgt = _split(samples, "train")
    hist, tgt = _split(samples, "test")
    pop = ranking_metrics(popularity_rank(train_hist, train_tgt, len(tgt), 10), tgt, (10,))["ndcg@10"]
    markov = ranking_metrics(_markov_rank(train_hist, train_tgt, hist), tgt, (10,))["ndcg@10"]
    assert 0.01 < pop and markov > 2.5 * pop and markov < 0.6, (pop, markov)


def test_no_transitions_no_sequential_signal():
    """With transition_prob=0 the Markov model has nothing to exploit beyond popularity/taste."""
    _, samples, _ = load_synthetic(DataConfig(synthetic=SyntheticConfig(transition_prob=0.0)))
    train_hist, train_tgt = _split(samples, "train")
    hist, tgt = _split(samples, "test")
    pop = ranking_metrics(popularity_rank(train_hist, train_tgt, len(tgt), 10), tgt, (10,))["ndcg@10"]
    markov = ranking_metrics(_markov_rank(train_hist, train_tgt, hist), tgt, (10,))["ndcg@10"]
    assert markov < 1.5 * pop + 0.02, (pop, markov)


def test_popularity_skew_and_varied_lengths(default):
    _, samples, _ = default
    seqs = _sequences(samples)
    counts = Counter(i for s in seqs.values() for i in s)
    cfg = SyntheticConfig()
    top = sum(c for _, c in counts.most_common(cfg.n_items // 10)) / sum(counts.values())
    assert 0.2 < top < 0.6, top  # a popular head (uniform would be 0.1), not a handful of hits
    assert len(counts) > 0.8 * cfg.n_items  # the long tail is still bought
    lengths = Counter(len(s) for s in seqs.values())
    assert len(lengths) == cfg.max_seq_len - cfg.min_seq_len + 1


def test_successors_are_related_items():
    from raygen.data.synthetic import _items

    cfg = SyntheticConfig()
    cat = _items(cfg, np.random.default_rng(0))
    for i, succ in enumerate(cat.successors):
        assert len(succ) == len(set(succ)) == cfg.n_successors and i not in succ
        related = {int(cat.sub_of[i]), *cat.complements[cat.sub_of[i]]}
        assert all(int(cat.sub_of[j]) in related for j in succ), (i, succ)


def test_tiny_catalog():
    """Fewer items than subcategories: successors fall back to the category / catalog."""
    items, samples, report = load_data(DataConfig(synthetic=SyntheticConfig(n_items=20, n_users=10)))
    assert items.num_rows == 20 and report["users"] == 10
    assert all(len(set(s)) == len(s) for s in _sequences(samples).values())


def test_works_with_mentions_the_next_purchase(default):
    """An item's "Works with <subcategory>" sentence names where its buyers go next."""
    items, samples, _ = default
    rows = items.to_pylist()
    sub = [r["categories"][1] for r in rows]
    seqs = _sequences(samples)
    pairs = [(a, b) for s in seqs.values() for a, b in zip(s, s[1:]) if sub[a] != sub[b]]
    mentioned = [f"Works with {sub[b].lower()}." in rows[a]["description"] for a, b in pairs]
    subs = sorted(set(sub))
    chance = np.mean([f"Works with {s.lower()}." in rows[a]["description"] for a, _ in pairs for s in subs])
    assert np.mean(mentioned) > 0.3 and np.mean(mentioned) > 8 * chance, (np.mean(mentioned), chance)


@pytest.mark.parametrize("data, msg", [
    ({"synthetic": {"n_categories": 13}}, "n_categories"),
    ({"synthetic": {"n_items": 5}}, "n_items"),
    ({"synthetic": {"min_seq_len": 9, "max_seq_len": 4}}, "min_seq_len"),
    ({"synthetic": {"transition_prob": 1.5}}, "transition_prob"),
    ({"synthetic": {"n_successors": 0}}, "n_successors"),
    ({"synthetic": {"successor_decay": 0.0}}, "successor_decay"),
    ({"synthetic": {"popularity_sigma": -1.0}}, "popularity_sigma"),
    ({"max_history": 0}, "max_history"),
    ({"source": "minionerec"}, "data.path"),
    ({"source": "amazon2023", "path": "x"}, "data.category"),
])
def test_config_validation(data, msg):
    with pytest.raises(ConfigError, match=msg):
        from_dict(DataConfig, data)


# --- validate_tables -------------------------------------------------------------------------


def _tables():
    items = pa.Table.from_pylist([
        {"item_id": i, "title": f"Item {i}", "description": "", "brand": "", "categories": []} for i in range(3)
    ], schema=ITEMS_SCHEMA)
    samples = pa.Table.from_pylist([
        {"user_id": "a", "history": [0], "target": 1, "split": "train"},
        {"user_id": "a", "history": [0, 1], "target": 2, "split": "test"},
    ], schema=SAMPLES_SCHEMA)
    return items, samples


def _set(table: pa.Table, column: str, row: int, value) -> pa.Table:
    values = table[column].to_pylist()
    values[row] = value
    return table.set_column(table.schema.get_field_index(column), table.schema.field(column),
                            pa.array(values, table.schema.field(column).type))


@pytest.mark.parametrize("table, column, row, value, match", [
    ("items", "item_id", 2, 0, r"items:0 field 'item_id': duplicate item id 0"),
    ("items", "item_id", 1, None, r"items:1 field 'item_id': null item id"),
    ("items", "title", 1, "  ", r"items:1 field 'title': empty title for item 1"),
    ("items", "title", 2, None, r"items:2 field 'title': empty title"),
    ("samples", "target", 1, 7, r"samples:1 field 'target': target 7 not in the catalog"),
    ("samples", "history", 1, [0, 9], r"samples:1 field 'history': history item 9 not in the catalog"),
    ("samples", "history", 0, [], r"samples:0 field 'history': empty history"),
    ("samples", "split", 0, "dev", r"samples:0 field 'split': unknown split 'dev'"),
    ("samples", "user_id", 1, None, r"samples:1 field 'user_id': null user id"),
])
def test_validate_tables_rejects(table, column, row, value, match):
    items, samples = _tables()
    validate_tables(items, samples)  # the untouched tables are fine
    if table == "items":
        items = _set(items, column, row, value)
    else:
        samples = _set(samples, column, row, value)
    with pytest.raises(DataError, match=match):
        validate_tables(items, samples)


def test_validate_tables_schema_and_empty():
    items, samples = _tables()
    with pytest.raises(DataError, match="schema"):
        validate_tables(items.drop_columns(["brand"]), samples)
    with pytest.raises(DataError, match="no samples"):
        validate_tables(items, samples.slice(0, 0))


def test_load_data_unknown_source():
    with pytest.raises(DataError, match="unknown source 'csv'"):
        load_data(DataConfig(source="csv"))  # type: ignore[arg-type]


def test_vocabulary_is_consistent():
    from raygen.data.synthetic import ATTRS, CATALOG

    subs = [s for _, _, subcats in CATALOG.values() for s in subcats]
    assert len(subs) == len(set(subs)) == 4 * len(CATALOG)  # names are unique: they key the transition graph
    for brands, features, subcats in CATALOG.values():
        assert len(brands) >= 2 and len(features) >= 2
        for nouns, attrs, use, comps in subcats.values():
            assert nouns and use and set(attrs) <= set(ATTRS)
            assert set(comps) <= set(subs), comps
