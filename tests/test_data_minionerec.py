"""MiniOneRec loader: the real Amazon-18 Industrial release (when present) and handwritten bad input."""
from __future__ import annotations

import ast
import csv
import json
from collections import defaultdict
from pathlib import Path

import pytest

from raygen.data.config import DataConfig
from raygen.data.load import load_data
from raygen.data.minionerec import load_minionerec
from raygen.data.schema import DataError

REAL = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "amazon18-industrial").resolve()
needs_real = pytest.mark.skipif(not (REAL / "items.json").is_file(),
                                reason=f"real MiniOneRec data not found at {REAL}")
COLUMNS = ["user_id", "history_item_title", "item_title", "history_item_id", "item_id", "history_item_sid", "item_sid"]


@pytest.fixture(scope="module")
def real():
    return load_data(DataConfig(source="minionerec", path=str(REAL)))


def _csv_rows(name: str) -> list[tuple[str, list[int], int]]:
    """The release's rows parsed independently of the loader."""
    with open(REAL / name, newline="", encoding="utf-8") as f:
        return [(r["user_id"], ast.literal_eval(r["history_item_id"]), int(r["item_id"])) for r in csv.DictReader(f)]


@needs_real
def test_real_counts(real):
    items, samples, report = real
    assert items.num_rows == 3686
    assert report["items"] == 3686
    first_hist = {}
    for u, h, _ in _csv_rows("valid.csv") + _csv_rows("test.csv"):
        first_hist.setdefault(u, h)
    # one train sample per item after the first of each user's first eval history (10,393: the
    # README's "about 10.4k"); valid/test: one per row of the release's files
    expected = {"train": sum(len(h) - 1 for h in first_hist.values()), "valid": len(_csv_rows("valid.csv")),
                "test": len(_csv_rows("test.csv"))}
    assert report["samples"] == expected and expected["train"] == 10393
    assert report["users"] == len(first_hist) == 3285
    train_users = {u for u, s in zip(samples["user_id"].to_pylist(), samples["split"].to_pylist()) if s == "train"}
    assert train_users == {u for u, h in first_hist.items() if len(h) >= 2}
    json.dumps(report)  # JSON-able for metrics.json


@needs_real
def test_real_item_text_is_clean(real):
    items, _, report = real
    rows = {r["item_id"]: r for r in items.to_pylist()}
    assert sorted(rows) == list(range(3686))
    assert rows[1]["description"].startswith("Heavy-duty staples are ideal")
    assert rows[1]["brand"] == "Stanley"
    assert not any(r["description"].startswith(("['", '["')) for r in rows.values())
    assert all(len(r["description"]) <= 2000 for r in rows.values())
    assert sum(r["description"] == "" for r in rows.values()) >= 200  # the README's "some are empty"
    assert all(r["categories"] == [] for r in rows.values())  # categories are "" in this release
    assert report["skips"]["counts"]["description_truncated"] > 0


@needs_real
def test_real_eval_rows_kept_and_train_leak_free(real):
    _, samples, _ = real
    by_user = defaultdict(lambda: defaultdict(list))
    for r in samples.to_pylist():
        by_user[r["user_id"]][r["split"]].append((tuple(r["history"]), r["target"]))
    valid, test = _csv_rows("valid.csv"), _csv_rows("test.csv")
    # Eval rows are kept as they are, in file order (histories <= 10 < max_history=20: untruncated).
    for split, rows in (("valid", valid), ("test", test)):
        kept = [(r["user_id"], r["history"], r["target"]) for r in samples.to_pylist() if r["split"] == split]
        assert kept == rows
    first_hist = {}
    for u, h, _ in valid + test:
        first_hist.setdefault(u, h)
    for user, splits in by_user.items():
        evals = set(splits["valid"]) | set(splits["test"])
        train = splits["train"]
        assert not set(train) & evals, user
        # Every train target happened before the eval targets: it is in the first eval history,
        # and train targets are exactly that history after its first item.
        assert sorted(t for _, t in train) == sorted(first_hist[user][1:]), user
        for hist, target in train:
            assert list(hist) + [target] == first_hist[user][: len(hist) + 1]


@needs_real
def test_real_truncation_and_description_limit(real):
    items, samples, report = load_minionerec(
        DataConfig(source="minionerec", path=str(REAL), max_history=3, max_description_chars=100))
    assert max(len(h) for h in samples["history"].to_pylist()) == 3
    test_rows = [r for r in samples.to_pylist() if r["split"] == "test"]
    assert [(r["history"], r["target"]) for r in test_rows] == [(h[-3:], t) for _, h, t in _csv_rows("test.csv")]
    assert max(len(d) for d in items["description"].to_pylist()) <= 100
    n_long = sum(len(d) > 100 for d in real[0]["description"].to_pylist())
    assert report["skips"]["counts"]["description_truncated"] == n_long


# --- handwritten bad input -------------------------------------------------------------------


def _write(root: Path, items, valid: list[list], test: list[list] | None = None) -> DataConfig:
    """Write a small release: ``items`` is a dict (dumped as JSON) or raw bytes/str; rows are
    ``[user, history_literal, target]``."""
    if isinstance(items, dict):
        items = json.dumps(items, indent=2)
    (root / "items.json").write_bytes(items.encode() if isinstance(items, str) else items)
    for name, rows in (("valid.csv", valid), ("test.csv", test or [])):
        with open(root / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS)
            for user, hist, target in rows:
                w.writerow([user, "[]", "t", hist, target, "[]", "<a_1>"])
    return DataConfig(source="minionerec", path=str(root), max_description_chars=50)


def _item(title="Item", description="['A useful part.']", brand="Acme", categories=""):
    return {"title": title, "description": description, "brand": brand, "categories": categories}


ITEMS = {str(i): _item(title=f"Item {i}") for i in range(6)}


def test_train_rebuild_from_first_eval_row(tmp_path):
    cfg = _write(tmp_path, ITEMS,
                 valid=[["A", "[0, 1, 2]", 3], ["B", "[5]", 4], ["A", "[0, 1, 2, 3]", 4]],
                 test=[["A", "[0, 1, 2, 3, 4]", 5], ["C", "[2, 0]", 1]])
    items, samples, report = load_data(cfg)
    rows = [(r["user_id"], r["history"], r["target"], r["split"]) for r in samples.to_pylist()]
    assert rows == [
        ("A", [0], 1, "train"), ("A", [0, 1], 2, "train"),
        ("C", [2], 0, "train"),
        ("A", [0, 1, 2], 3, "valid"), ("B", [5], 4, "valid"), ("A", [0, 1, 2, 3], 4, "valid"),
        ("A", [0, 1, 2, 3, 4], 5, "test"), ("C", [2, 0], 1, "test"),
    ]
    assert report["samples"] == {"train": 3, "valid": 3, "test": 2}
    assert report["users"] == 3 and report["skips"]["total"] == 0
    assert items.to_pylist()[0] == {"item_id": 0, "title": "Item 0", "description": "A useful part.",
                                     "brand": "Acme", "categories": []}


def test_bad_csv_rows_are_counted_skips(tmp_path):
    cfg = _write(tmp_path, ITEMS, valid=[
        ["A", "[0, 1]", 2],          # line 2: fine
        ["A", "[0, 1", 2],           # line 3: list literal does not parse
        ["B", "[0, 99]", 2],         # line 4: unknown id in history
        ["B", "[0]", 77],            # line 5: unknown target
        ["C", "[]", 2],              # line 6: empty history
        ["D", "[0, 'x']", 2],        # line 7: not a list of ints
        ["E", "[1]", "two"],         # line 8: target not an integer
        ["", "[1]", 2],              # line 9: no user
        ["F", "__import__('os')", 2],  # line 10: never evaluated, just rejected
    ])
    _, samples, report = load_data(cfg)
    assert samples.num_rows == 2  # A's valid row and its one train prefix
    assert report["skips"]["counts"] == {
        "sample_bad_history_literal": 3, "sample_unknown_item": 2, "sample_empty_history": 1,
        "sample_bad_target": 1, "sample_missing_user": 1,
    }
    ex = report["skips"]["examples"]
    assert ex["sample_bad_history_literal"] == ["valid.csv:3", "valid.csv:7", "valid.csv:10"]
    assert ex["sample_unknown_item"] == ["valid.csv:4", "valid.csv:5"]
    assert ex["sample_empty_history"] == ["valid.csv:6"]


def test_missing_title_skips_item_and_its_samples(tmp_path):
    items = dict(ITEMS)
    items["3"] = _item(title="  ")
    items["4"] = {k: v for k, v in _item().items() if k != "title"}
    cfg = _write(tmp_path, items, valid=[["A", "[0, 1]", 2], ["B", "[3, 1]", 2], ["C", "[0]", 4]],
                 test=[["A", "[0, 1, 2]", 5], ["B", "[1, 2]", 3]])
    items_t, samples, report = load_data(cfg)
    assert items_t["item_id"].to_pylist() == [0, 1, 2, 5]
    assert report["skips"]["counts"] == {"item_missing_title": 2, "sample_references_skipped_item": 3}
    assert report["skips"]["examples"]["sample_references_skipped_item"] == ["valid.csv:3", "valid.csv:4", "test.csv:3"]
    assert report["samples"] == {"train": 1, "valid": 1, "test": 1}


def test_malformed_json_names_file_and_line(tmp_path):
    cfg = _write(tmp_path, '{\n  "0": {"title": "x"},\n  "1": {"title": "y",,}\n}\n', valid=[["A", "[0]", 1]])
    with pytest.raises(DataError, match=r"items\.json:3: malformed JSON at line 3 column"):
        load_data(cfg)


def test_duplicate_item_id_in_json_is_an_error(tmp_path):
    text = '{\n"0": {"title": "a"},\n"1": {"title": "b"},\n"0": {"title": "c"}\n}\n'
    cfg = _write(tmp_path, text, valid=[["A", "[0]", 1]])
    with pytest.raises(DataError, match=r"items\.json:4 field '0': duplicate key '0'") as e:
        load_data(cfg)
    assert e.value.line == 4 and e.value.field == "0"


def test_non_integer_item_id_is_an_error(tmp_path):
    cfg = _write(tmp_path, {"0": _item(), "x1": _item()}, valid=[["A", "[0]", 0]])
    with pytest.raises(DataError, match="item id 'x1' is not an integer"):
        load_data(cfg)


def test_non_utf8_and_long_descriptions_are_repaired_and_counted(tmp_path):
    body = json.dumps({"0": _item(title="Caf\u00e9 X"), "1": _item(description="['" + "word " * 30 + "']"),
                       "2": _item(description="['It's broken', 'second part']")}, indent=1).encode()
    body = body.replace("Caf\\u00e9".encode(), b"Caf\xe9")  # a Latin-1 byte: not UTF-8
    cfg = _write(tmp_path, body, valid=[["A", "[0, 1]", 2]])
    items, _, report = load_data(cfg)
    rows = items.to_pylist()
    assert rows[0]["title"] == "Caf\ufffd X"
    assert len(rows[1]["description"]) <= 50 and rows[1]["description"].startswith("word word")
    assert rows[2]["description"] == "It's broken second part"
    assert report["skips"]["counts"] == {"non_utf8_line": 1, "description_truncated": 1,
                                         "description_literal_repaired": 1}
    assert report["skips"]["examples"]["non_utf8_line"] == ["items.json:3"]  # line 1 "{", line 2 '"0": {', line 3 the title


def test_missing_csv_column_and_missing_files(tmp_path):
    cfg = _write(tmp_path, ITEMS, valid=[["A", "[0]", 1]])
    (tmp_path / "test.csv").write_text("user_id,history_item_id\nA,[0]\n")
    with pytest.raises(DataError, match=r"test\.csv:1 field 'item_id': missing column"):
        load_data(cfg)
    (tmp_path / "test.csv").unlink()
    with pytest.raises(DataError, match="test.csv: file not found"):
        load_data(cfg)


# --- issue 13: crashes and silent drops on corrupted input -----------------------------------


def test_csv_field_over_the_csv_module_limit_is_read(tmp_path):
    """A 200,000-character title (> csv's default 128 KiB field limit) is read, not a _csv.Error."""
    cfg = _write(tmp_path, ITEMS, valid=[["A", "[0, 1]", 2], ["B", "[1]", 3]])
    path = tmp_path / "valid.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace(",[],t,", ",[]," + "T" * 200_000 + ",", 1)
    path.write_text("".join(lines))
    _, samples, report = load_data(cfg)
    assert [r["split"] for r in samples.to_pylist()].count("valid") == 2
    assert report["skips"]["total"] == 0


def test_targets_must_be_ascii_integers(tmp_path):
    cfg = _write(tmp_path, ITEMS, valid=[
        ["A", "[0, 1]", 2],   # line 2: fine
        ["B", "[0]", "--5"],  # line 3: passed lstrip('-').isdigit(), then int() raised
        ["C", "[0]", "²"],    # line 4: str.isdigit() is true for a superscript two
        ["D", "[0]", "١٢"],   # line 5: Arabic-Indic twelve was read as item 12 (here: would be unknown)
        ["E", "[0]", " 3"],   # line 6: surrounding blanks are fine
    ])
    _, samples, report = load_data(cfg)
    assert report["skips"]["counts"] == {"sample_bad_target": 3}
    assert report["skips"]["examples"]["sample_bad_target"] == ["valid.csv:3", "valid.csv:4", "valid.csv:5"]
    assert [(r["user_id"], r["target"]) for r in samples.to_pylist() if r["split"] == "valid"] == [("A", 2), ("E", 3)]


def test_arabic_indic_digits_are_not_item_12(tmp_path):
    items = {str(i): _item(title=f"Item {i}") for i in range(13)}
    cfg = _write(tmp_path, items, valid=[["A", "[0]", "١٢"], ["B", "[0]", 12]])
    _, samples, report = load_data(cfg)
    assert report["skips"]["counts"] == {"sample_bad_target": 1}
    assert [r["user_id"] for r in samples.to_pylist() if r["split"] == "valid"] == ["B"]


@pytest.mark.parametrize("key", ["99999999999999999999", "-99999999999999999999", "١٢", "1_2", "+3"])
def test_item_id_out_of_int64_or_not_ascii_is_an_error(tmp_path, key):
    text = '{\n"0": {"title": "a"},\n"%s": {"title": "b"}\n}\n' % key
    cfg = _write(tmp_path, text, valid=[["A", "[0]", 0]])
    with pytest.raises(DataError, match=r"items\.json:3 field .*(int64|not an integer)") as e:
        load_data(cfg)
    assert e.value.line == 3 and e.value.field == key


def test_history_ids_out_of_int64_are_unknown_items(tmp_path):
    cfg = _write(tmp_path, ITEMS, valid=[["A", "[0, 99999999999999999999]", 1], ["B", "[0]", "99999999999999999999"],
                                         ["C", "[0]", 1]])
    _, samples, report = load_data(cfg)
    assert report["skips"]["counts"] == {"sample_unknown_item": 2}
    assert samples.num_rows == 1


def test_unterminated_quote_is_an_error_not_a_silent_drop(tmp_path):
    """Python's csv folds every row after an unterminated quote into one field: fail naming the line."""
    cfg = _write(tmp_path, ITEMS, valid=[["A", "[0]", 1]] * 10)  # one-item histories: no other quote in the file
    path = tmp_path / "valid.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace(",t,", ',"t,', 1)  # line 4: a quote that never closes
    path.write_text("".join(lines))
    with pytest.raises(DataError, match=r"valid\.csv:4 field 'item_title': .*line break.*lines 4-11") as e:
        load_data(cfg)
    assert e.value.line == 4


def test_huge_history_literal_is_parsed_in_linear_time(tmp_path, monkeypatch):
    import ast
    import time

    import raygen.data.common as common

    seen, real_literal_eval = [], ast.literal_eval

    def spy(node_or_text):
        if isinstance(node_or_text, str):
            seen.append(len(node_or_text))
        return real_literal_eval(node_or_text)

    monkeypatch.setattr(common.ast, "literal_eval", spy)
    hist = "[" + ", ".join(["0", "1"] * 50_000) + "]"  # 400 KB: far over the cap on what ast.literal_eval gets
    cfg = _write(tmp_path, ITEMS, valid=[["A", hist, 2], ["B", "[" + "0, " * 40_000 + "'x']", 2]])
    t0 = time.perf_counter()
    _, samples, report = load_data(cfg)
    assert time.perf_counter() - t0 < 60  # ~1 s; before: minutes (ast on 400 KB, quadratic prefix copies)
    assert max(seen, default=0) <= common.MAX_LITERAL_CHARS
    assert report["skips"]["counts"] == {"sample_bad_history_literal": 1}
    valid = [r for r in samples.to_pylist() if r["split"] == "valid"]
    assert [r["user_id"] for r in valid] == ["A"] and valid[0]["history"] == [0, 1] * 10  # max_history 20


def test_huge_description_literal_is_capped_before_parsing(tmp_path):
    import time

    big = "[" + ", ".join(str(i) for i in range(700_000)) + "]"  # ~4.6 MiB list literal of ints
    items = {"0": _item(description=big), "1": _item(description="['" + "x" * 70_000 + "', 'tail']"), "2": _item()}
    cfg = _write(tmp_path, items, valid=[["A", "[0, 1]", 2]])
    t0 = time.perf_counter()
    items_t, _, report = load_data(cfg)
    assert time.perf_counter() - t0 < 60  # well under 1 s; before: 9 s and 2 GB in ast.literal_eval
    rows = items_t.to_pylist()
    assert rows[0]["description"].startswith("[0, 1, 2") and len(rows[0]["description"]) <= 50
    assert rows[1]["description"] == "x" * 50
    counts = report["skips"]["counts"]
    assert counts["description_literal_too_long"] == 2 and counts["description_truncated"] == 2


def test_nan_fields_are_missing_not_the_text_nan(tmp_path):
    text = ('{\n"0": {"title": "a", "description": NaN, "brand": NaN, "categories": NaN},\n'
            '"1": {"title": "b", "description": ["ok", NaN], "brand": Infinity, "categories": ["c", NaN]},\n'
            '"2": {"title": "c"}\n}\n')
    cfg = _write(tmp_path, text, valid=[["A", "[0, 1]", 2]])
    items, _, report = load_data(cfg)
    rows = items.to_pylist()
    assert [(r["description"], r["brand"], r["categories"]) for r in rows[:2]] == [("", "", []), ("ok", "", ["c"])]
    assert report["skips"]["counts"] == {"non_finite_number_field": 6}
    assert report["skips"]["examples"]["non_finite_number_field"][0] == "items.json item 0 field 'description'"


def test_unreadable_json_number_is_an_error(tmp_path):
    cfg = _write(tmp_path, '{\n"0": {"title": "a", "brand": ' + "9" * 5000 + '}\n}\n', valid=[["A", "[0]", 0]])
    with pytest.raises(DataError, match=r"^items\.json: unreadable JSON: ValueError: Exceeds the limit"):
        load_data(cfg)


def test_prefix_samples_of_a_long_sequence_are_linear():
    import time

    from raygen.data.common import loo_samples, prefix_samples

    seq = list(range(200_000))
    t0 = time.perf_counter()
    rows = prefix_samples("u", seq, 3)
    loo = loo_samples("u", seq, 3)
    assert time.perf_counter() - t0 < 30  # ~1 s; slicing seq[:i] first was quadratic (minutes)
    assert rows[0]["history"] == [0] and rows[-1] == {"user_id": "u", "history": [199_996, 199_997, 199_998],
                                                      "target": 199_999, "split": "train"}
    assert loo[-1]["split"] == "test" and loo[-1]["history"] == [199_996, 199_997, 199_998]
