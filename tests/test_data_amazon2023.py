"""Amazon Reviews 2023 loader on small handwritten .jsonl / .jsonl.gz files."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from raygen.data.amazon2023 import kcore, load_amazon2023
from raygen.data.config import DataConfig
from raygen.data.load import load_data
from raygen.data.schema import DataError

CAT = "Tools"
# Core: users U1..U3 each review A..E (at these timestamps, ms); A..E then have 3 reviews each.
CORE = {
    "U1": {"E": 1000, "A": 2000, "D": 3000, "B": 4000, "C": 5000},
    "U2": {"A": 1500, "B": 2500, "C": 2500, "D": 6000, "E": 7000},  # B and C tie: file order decides
    "U3": {"C": 1100, "A": 1200, "B": 8000, "E": 9000, "D": 9500},
}
# Outside the 3-core: U4 has 2 reviews (F, G); F has 3 (U1, U2, U4) until U4 goes, then 2 -> F goes too.
EXTRA = [("U4", "F", 500), ("U4", "G", 600), ("U1", "F", 5500), ("U2", "F", 100)]


def _reviews() -> list[dict]:
    rows = [{"user_id": u, "parent_asin": a, "timestamp": t, "rating": 5.0, "text": "ok"}
            for u, seq in CORE.items() for a, t in seq.items()]
    rows += [{"user_id": u, "parent_asin": a, "timestamp": t, "rating": 4.0} for u, a, t in EXTRA]
    rows = rows[::-1]  # file order is not chronological
    # exact duplicate of U3's review of A (same timestamp), one review of a title-less item (H),
    # one of an item without metadata (I)
    rows += [{"user_id": "U3", "parent_asin": "A", "timestamp": 1200},
             {"user_id": "U1", "parent_asin": "H", "timestamp": 50},
             {"user_id": "U2", "parent_asin": "I", "timestamp": 60}]
    return rows


def _meta() -> list[dict]:
    rows = [{"parent_asin": a, "title": f"Widget {a}", "description": [f"Widget {a} does things.", "Sturdy."],
             "store": "Acme", "categories": ["Industrial", "Widgets"], "features": ["f1"]} for a in "GFEDCBA"]
    rows[0]["description"] = []  # G: falls back to its features (G is k-cored out anyway)
    rows[1]["store"] = None
    rows.append({"parent_asin": "H", "title": "", "description": ["no title"]})
    rows.append({"parent_asin": "Z", "title": "never reviewed"})
    return rows


def _write(root: Path, reviews: list, meta: list, gz: bool = False) -> None:
    for name, rows in ((CAT, reviews), (f"meta_{CAT}", meta)):
        text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
        if gz:
            with gzip.open(root / f"{name}.jsonl.gz", "wt", encoding="utf-8") as f:
                f.write(text)
        else:
            (root / f"{name}.jsonl").write_text(text)


def _cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(source="amazon2023", path=str(root), category=CAT, min_interactions=3, **kw)


@pytest.fixture
def data_dir(tmp_path):
    root = tmp_path / "plain"
    root.mkdir()
    _write(root, _reviews(), _meta())
    return root


def _rows(samples):
    return [(r["user_id"], r["history"], r["target"], r["split"]) for r in samples.to_pylist()]


def test_kcore_is_iterative():
    user = np.array([0, 0, 1, 1, 1, 2])
    item = np.array([0, 1, 0, 1, 2, 2])
    # k=2: user 2 (1 interaction) goes, then item 2 has 1 -> goes, then user 1 keeps 2.
    assert kcore(user, item, 2).tolist() == [True, True, True, True, False, False]


def test_loo_split_kcore_and_ordering(data_dir):
    items, samples, report = load_data(_cfg(data_dir))
    # asins sorted -> ids: A=0 ... E=4; F, G (k-core), H (no title), I (no meta) are gone.
    assert items["item_id"].to_pylist() == [0, 1, 2, 3, 4]
    assert items["title"].to_pylist() == [f"Widget {a}" for a in "ABCDE"]
    assert items.to_pylist()[0]["description"] == "Widget A does things. Sturdy."
    assert items.to_pylist()[0]["categories"] == ["Industrial", "Widgets"]
    A, B, C, D, E = range(5)
    assert _rows(samples) == [
        ("U1", [E], A, "train"), ("U1", [E, A], D, "train"),
        ("U1", [E, A, D], B, "valid"), ("U1", [E, A, D, B], C, "test"),
        # U2's B and C share a timestamp; C comes first in the (reversed) file
        ("U2", [A], C, "train"), ("U2", [A, C], B, "train"),
        ("U2", [A, C, B], D, "valid"), ("U2", [A, C, B, D], E, "test"),
        ("U3", [C], A, "train"), ("U3", [C, A], B, "train"),
        ("U3", [C, A, B], E, "valid"), ("U3", [C, A, B, E], D, "test"),
    ]
    assert report["kcore"] == {"k": 3, "interactions_before": 19, "interactions_after": 15,
                               "users_before": 4, "users_after": 3, "items_before": 7, "items_after": 5}
    assert report["interactions_read"] == 22
    assert report["skips"]["counts"] == {"item_missing_title": 1, "interaction_item_missing_title": 1,
                                         "interaction_item_without_meta": 1, "interaction_exact_duplicate": 1}
    assert report["skips"]["examples"]["interaction_exact_duplicate"] == [f"{CAT}.jsonl:20"]
    assert report["samples"] == {"train": 6, "valid": 3, "test": 3}
    assert report["users"] == 3 and report["users_without_samples"] == 0
    json.dumps(report)


def test_time_split(data_dir):
    _, samples, _ = load_data(_cfg(data_dir, split="time"))
    # The 15 core interactions in global time order; ranks < 12 train, 12 valid, 13..14 test.
    events = sorted((t, u, a) for u, seq in CORE.items() for a, t in seq.items())
    split_of = {(u, a): "train" if k < 12 else "valid" if k < 13 else "test" for k, (_, u, a) in enumerate(events)}
    ids = {a: i for i, a in enumerate("ABCDE")}
    expected = []
    for u in CORE:
        seq = [a for _, uu, a in events if uu == u]
        if u == "U2":  # the B/C tie at 2500 is broken by file order (C first)
            seq = ["A", "C", "B", "D", "E"]
        expected += [(u, [ids[x] for x in seq[:i]], ids[seq[i]], split_of[(u, seq[i])]) for i in range(1, 5)]
    assert _rows(samples) == expected
    assert [s for *_, s in _rows(samples)].count("test") == 2
    assert [s for *_, s in _rows(samples)].count("valid") == 1


def test_history_truncation(data_dir):
    _, samples, _ = load_data(_cfg(data_dir, max_history=2))
    rows = _rows(samples)
    assert max(len(h) for _, h, _, _ in rows) == 2
    assert rows[3] == ("U1", [3, 1], 2, "test")  # [E, A, D, B] -> last two [D, B]


def test_gzip_files_give_the_same_tables(tmp_path, data_dir):
    _write(tmp_path, _reviews(), _meta(), gz=True)
    plain = load_amazon2023(_cfg(data_dir))
    zipped = load_amazon2023(_cfg(tmp_path))
    assert zipped[0].equals(plain[0]) and zipped[1].equals(plain[1])
    assert zipped[2]["skips"]["examples"]["interaction_exact_duplicate"] == [f"{CAT}.jsonl.gz:20"]


def test_malformed_line_names_file_and_line(tmp_path):
    reviews = _reviews()
    reviews.insert(2, '{"user_id": "U9", "parent_asin": ')
    _write(tmp_path, reviews, _meta())
    with pytest.raises(DataError, match=rf"^{CAT}\.jsonl:3: malformed JSON"):
        load_data(_cfg(tmp_path))


@pytest.mark.parametrize("bad, field", [
    ({"user_id": "U9", "parent_asin": "A"}, "timestamp"),
    ({"user_id": "U9", "parent_asin": "A", "timestamp": "yesterday"}, "timestamp"),
    ({"parent_asin": "A", "timestamp": 5}, "user_id"),
    ([1, 2], None),
])
def test_bad_review_fields_are_errors(tmp_path, bad, field):
    reviews = _reviews()
    reviews.insert(4, bad)
    _write(tmp_path, reviews, _meta())
    with pytest.raises(DataError) as e:
        load_data(_cfg(tmp_path))
    assert (e.value.file, e.value.line, e.value.field) == (f"{CAT}.jsonl", 5, field)


def test_malformed_meta_line(tmp_path):
    meta = _meta()
    meta.insert(1, "not json")
    _write(tmp_path, _reviews(), meta)
    with pytest.raises(DataError, match=rf"meta_{CAT}\.jsonl:2: malformed JSON"):
        load_data(_cfg(tmp_path))


def test_non_utf8_meta_and_duplicate_meta_are_counted(tmp_path):
    _write(tmp_path, _reviews(), _meta() + [{"parent_asin": "A", "title": "second A record"}])
    path = tmp_path / f"meta_{CAT}.jsonl"
    path.write_bytes(path.read_bytes().replace(b"Widget E", b"Widget \xff"))
    items, _, report = load_data(_cfg(tmp_path))
    assert items["title"].to_pylist()[4] == "Widget \ufffd"
    assert items["title"].to_pylist()[0] == "Widget A"  # the first A record wins
    assert report["skips"]["counts"]["non_utf8_line"] == 1
    assert report["skips"]["examples"]["non_utf8_line"] == [f"meta_{CAT}.jsonl:3"]
    assert report["skips"]["examples"]["meta_duplicate_asin"] == [f"meta_{CAT}.jsonl:10"]


def test_missing_files_category_and_empty_core(tmp_path, data_dir):
    with pytest.raises(DataError, match=rf"{CAT}\.jsonl\[\.gz\]: file not found"):
        load_data(_cfg(tmp_path))  # holds only the "plain" folder
    with pytest.raises(DataError, match="needs a category"):
        load_data(DataConfig(source="amazon2023", path=str(data_dir)))
    with pytest.raises(DataError, match="no interactions left after the 6-core"):
        load_data(DataConfig(source="amazon2023", path=str(data_dir), category=CAT, min_interactions=6))


def test_many_skips_are_all_counted_with_a_few_examples(tmp_path):
    reviews = _reviews() + [{"user_id": f"V{i}", "parent_asin": "NOMETA", "timestamp": i} for i in range(12)]
    _write(tmp_path, reviews, _meta())
    _, _, report = load_data(_cfg(tmp_path))
    assert report["skips"]["counts"]["interaction_item_without_meta"] == 13  # I, plus the 12 above
    assert len(report["skips"]["examples"]["interaction_item_without_meta"]) == 5
    assert report["skips"]["total"] == 16


# --- issue 13: crashes on corrupted input ----------------------------------------------------


@pytest.mark.parametrize("ts", ["NaN", "Infinity", "-Infinity", "1e300", str(2 ** 70), "-1e30"])
def test_unusable_timestamps_are_errors_naming_the_line(tmp_path, ts):
    reviews = _reviews()
    reviews.insert(4, '{"user_id": "U9", "parent_asin": "A", "timestamp": %s}' % ts)
    _write(tmp_path, reviews, _meta())
    with pytest.raises(DataError, match=rf"^{CAT}\.jsonl:5 field 'timestamp': .*int64") as e:
        load_data(_cfg(tmp_path))
    assert (e.value.file, e.value.line, e.value.field) == (f"{CAT}.jsonl", 5, "timestamp")


def test_nan_meta_fields_are_missing_not_the_text_nan(tmp_path):
    meta = [m for m in _meta() if m["parent_asin"] != "A"]
    meta.insert(0, '{"parent_asin": "A", "title": "Widget A", "description": NaN, "features": NaN, '
                   '"store": NaN, "categories": [NaN], "main_category": NaN}')
    _write(tmp_path, _reviews(), meta)
    items, _, report = load_data(_cfg(tmp_path))
    a = items.to_pylist()[0]
    assert (a["title"], a["description"], a["brand"], a["categories"]) == ("Widget A", "", "", [])
    assert report["skips"]["counts"]["non_finite_number_field"] == 5


@pytest.mark.parametrize("line", ['{"user_id": "U9", "parent_asin": "A", "timestamp": %s}' % ("9" * 5000),
                                  "[" * 100_000 + "]" * 100_000])
def test_unreadable_json_numbers_and_nesting_are_errors(tmp_path, line):
    reviews = _reviews()
    reviews.insert(4, line)
    _write(tmp_path, reviews, _meta())
    with pytest.raises(DataError, match=rf"^{CAT}\.jsonl:5: unreadable JSON"):
        load_data(_cfg(tmp_path))
