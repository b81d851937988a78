"""data.source: table: formats and locations, column mapping, id maps, splits, k-core, repeats, bad rows."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from raygen.data import DataConfig, DataError, load_data
from raygen.data.amazon2023 import time_split_samples
from raygen.data.common import loo_samples
from raygen.data.config import TableConfig
from raygen.data.idmap import ITEM_MAP, USER_MAP, ItemIds
from raygen.data.table import build_table

# u1: A B C D, u2: B C A, u3: A C (timestamps 1..9 in this order)
ROWS = [("u1", "A", 1), ("u1", "B", 2), ("u1", "C", 3), ("u1", "D", 4), ("u2", "B", 5), ("u2", "C", 6),
        ("u2", "A", 7), ("u3", "A", 8), ("u3", "C", 9)]
A, B, C, D = 0, 1, 2, 3


def table_of(rows, names=("user_id", "item_id", "timestamp")) -> pa.Table:
    return pa.table({n: [r[i] for r in rows] for i, n in enumerate(names)})


def cfg_for(location, k=1, split="loo", max_history=20, **table) -> DataConfig:
    return DataConfig(source="table", min_interactions=k, split=split, max_history=max_history,
                      table=TableConfig(interactions=str(location), **table))


def rows_of(samples: pa.Table) -> list[tuple]:
    d = samples.to_pydict()
    return list(zip(d["user_id"], d["history"], d["target"], d["split"]))


def write_jsonl(path: Path, records: list[dict], bom: bool = False) -> None:
    path.write_text(("\ufeff" if bom else "") + "".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def test_loo_known_answer(tmp_path):
    pq.write_table(table_of(ROWS), tmp_path / "x.parquet")
    items, samples, report = load_data(cfg_for(tmp_path / "x.parquet"))
    assert items["item_id"].to_pylist() == [0, 1, 2, 3]
    assert rows_of(samples) == [
        ("u1", [A], B, "train"), ("u1", [A, B], C, "valid"), ("u1", [A, B, C], D, "test"),
        ("u2", [B], C, "valid"), ("u2", [B, C], A, "test"), ("u3", [A], C, "test")]
    assert report["samples"] == {"train": 1, "valid": 2, "test": 3} and report["users"] == 3


def test_time_split_known_answer(tmp_path):
    pq.write_table(table_of(ROWS), tmp_path / "x.parquet")
    _, samples, _ = load_data(cfg_for(tmp_path / "x.parquet", split="time"))
    # 9 interactions: ranks < 7 train (ts 1..7), rank 7 valid (ts 8, a user's first: no sample), rank 8 test
    assert rows_of(samples) == [
        ("u1", [A], B, "train"), ("u1", [A, B], C, "train"), ("u1", [A, B, C], D, "train"),
        ("u2", [B], C, "train"), ("u2", [B, C], A, "train"), ("u3", [A], C, "test")]


@pytest.mark.parametrize("split", ["loo", "time"])
def test_splits_equal_shared_rules(tmp_path, split):
    """The vectorised sample builder gives exactly what loo_samples / time_split_samples give."""
    rng = np.random.default_rng(0)
    n = 400
    user, item, ts = rng.integers(0, 30, n), rng.integers(0, 50, n), rng.integers(0, 60, n)  # ties in ts
    pq.write_table(pa.table({"user_id": user, "item_id": item, "timestamp": ts}), tmp_path / "x.parquet")
    _, samples, _ = load_data(cfg_for(tmp_path / "x.parquet", split=split, repeats="keep", max_history=3))
    users, items_ = np.unique(user), np.unique(item)
    u, it = np.searchsorted(users, user), np.searchsorted(items_, item)
    line = np.arange(n)
    names = [str(x) for x in users]
    if split == "time":
        expect = time_split_samples(names, u, it, ts, line, 3)
    else:
        order = np.lexsort((line, ts, u))
        expect = [s for uu in range(len(users)) for s in loo_samples(names[uu], it[order][u[order] == uu].tolist(), 3)]
    assert rows_of(samples) == [(s["user_id"], s["history"], s["target"], s["split"]) for s in expect]


def test_formats_and_locations(tmp_path):
    tbl = table_of(ROWS, names=("uid", "sku", "when"))
    (tmp_path / "parts").mkdir()
    pq.write_table(tbl.slice(0, 5), tmp_path / "parts" / "a.parquet")
    pq.write_table(tbl.slice(5), tmp_path / "parts" / "b.parquet")
    (tmp_path / "parts" / "_SUCCESS").write_text("")  # ignored like Spark's marker
    pacsv.write_csv(tbl, tmp_path / "x.csv")
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "x.csv").read_bytes())
    write_jsonl(tmp_path / "x.jsonl", tbl.to_pylist())
    cols = dict(user_column="uid", item_column="sku", timestamp_column="when")
    expected = None
    for loc in [tmp_path / "parts", tmp_path / "parts" / "*.parquet", tmp_path / "x.csv", tmp_path / "bom.csv",
                tmp_path / "x.jsonl", f"file://{tmp_path}/parts"]:
        _, samples, _ = load_data(cfg_for(loc, **cols))
        expected = expected or rows_of(samples)
        assert rows_of(samples) == expected, loc
    assert len(expected) == 6


def test_missing_column_is_one_line_error(tmp_path):
    pq.write_table(table_of(ROWS), tmp_path / "x.parquet")
    with pytest.raises(DataError, match=r"x\.parquet field 'ts'.*no such column \(data.table.timestamp_column\)"):
        load_data(cfg_for(tmp_path / "x.parquet", timestamp_column="ts"))
    with pytest.raises(DataError, match="no such file"):
        load_data(cfg_for(tmp_path / "nope.parquet"))


@pytest.mark.parametrize("ids", [["b10", "a2", "c", "zz"], [2 ** 62 + 5, -7, 2 ** 40, 3]])
def test_id_round_trip(tmp_path, ids):
    """String and int64 ids map to dense indices in sorted order; the maps give the originals back."""
    ext = dict(zip("ABCD", ids))
    rows = [(f"user-{u}" if isinstance(ids[0], str) else 10 ** 12 + int(u[1]), ext[i], t) for u, i, t in ROWS]
    pq.write_table(table_of(rows), tmp_path / "x.parquet")
    report = build_table(cfg_for(tmp_path / "x.parquet"), tmp_path / "out")
    m = pq.read_table(tmp_path / "out" / ITEM_MAP)
    assert m["item_id"].to_pylist() == [0, 1, 2, 3] and m["external_id"].to_pylist() == [str(x) for x in sorted(ids)]
    assert pq.read_table(tmp_path / "out" / USER_MAP).num_rows == 3
    kind = "string" if isinstance(ids[0], str) else "int64"
    assert report["id_types"] == {"user": kind, "item": kind}
    back = ItemIds.read(tmp_path / "out")
    for x in ids:
        assert back.external(back.internal(x)) == x
    samples = pq.read_table(tmp_path / "out" / "samples.parquet")
    first = samples.to_pylist()[0]  # u1: A -> B
    assert back.externals(first["history"]) == [ext["A"]] and back.external(first["target"]) == ext["B"]
    assert ItemIds.read(tmp_path).identity and ItemIds.read(tmp_path).internal("12") == 12


def test_kcore_iterative(tmp_path):
    # k=2: D (1 interaction) goes, then nothing else; with u4 seen once (item E once) both go too
    rows = ROWS + [("u4", "E", 10)]
    pq.write_table(table_of(rows), tmp_path / "x.parquet")
    items, samples, report = load_data(cfg_for(tmp_path / "x.parquet", k=2))
    assert report["kcore"] == {"k": 2, "interactions_before": 10, "users_before": 4, "items_before": 5,
                               "interactions_after": 8, "users_after": 3, "items_after": 3}
    assert items.num_rows == 3 and ("u1", [A, B], C, "test") in rows_of(samples)
    # k=3 cascades: B, D, E, u3, u4 go, which leaves u1 and u2 with 2 each: nothing is left
    with pytest.raises(DataError, match="x.parquet: no interactions left after the 3-core filter"):
        load_data(cfg_for(tmp_path / "x.parquet", k=3))


def test_repeats_rule(tmp_path):
    rows = [("u", "A", 1), ("u", "A", 2), ("u", "B", 3), ("u", "A", 4), ("u", "A", 4)]
    pq.write_table(table_of(rows), tmp_path / "x.parquet")
    _, samples, report = load_data(cfg_for(tmp_path / "x.parquet"))
    assert rows_of(samples) == [("u", [0], 1, "valid"), ("u", [0, 1], 0, "test")]
    assert report["skips"]["counts"]["consecutive_repeat"] == 2
    assert report["skips"]["examples"]["consecutive_repeat"] == ["x.parquet:row 2", "x.parquet:row 5"]
    _, kept, report = load_data(cfg_for(tmp_path / "x.parquet", repeats="keep"))
    assert kept.num_rows == 4 and "consecutive_repeat" not in report["skips"]["counts"]


def test_bad_rows_counted_and_timestamps_parsed(tmp_path):
    text = ("user_id,item_id,timestamp\n"
            "u1,A,2024-01-01T00:00:00Z\n"       # row 1
            ",A,2024-01-02T00:00:00\n"           # row 2: null user
            "u1,,2024-01-03\n"                   # row 3: null item
            "u1,B,not a time\n"                  # row 4: bad timestamp
            "u1,C,\n"                            # row 5: null timestamp
            "u1,D,2024-01-01T01:00:00+02:00\n"   # row 6: before row 1 (23:00 UTC the day before)
            "u1,E,2024-01-05 10:00:00\n")        # row 7
    (tmp_path / "x.csv").write_text(text)
    _, samples, report = load_data(cfg_for(tmp_path / "x.csv"))
    c, ex = report["skips"]["counts"], report["skips"]["examples"]
    assert {k: c[k] for k in ("null_user", "null_item", "bad_timestamp", "null_timestamp")} == dict.fromkeys(
        ("null_user", "null_item", "bad_timestamp", "null_timestamp"), 1)
    assert ex["null_user"] == ["x.csv:row 2"] and ex["bad_timestamp"] == ["x.csv:row 4"]
    assert ex["null_timestamp"] == ["x.csv:row 5"]
    d_, a_, e_ = 1, 0, 2  # catalog A, D, E
    assert rows_of(samples) == [("u1", [d_], a_, "valid"), ("u1", [d_, a_], e_, "test")]
    assert report["interactions_read"] == 7 and report["interactions_valid"] == 3


def test_item_table_text_and_fallback(tmp_path):
    pq.write_table(table_of(ROWS), tmp_path / "x.parquet")
    (tmp_path / "items.csv").write_text(
        "sku,name,about,feat,maker,cat\n"
        "A,Hex bolt,Steel bolt,M6,Acme,Hardware\n"
        "B,,Just text,,,\n"                       # empty title: fallback, counted
        "C,Glue,,Strong,Bond,Adhesives\n"
        "Z,Unused,,,,\n")                         # D is missing: fallback, counted
    cfg = cfg_for(tmp_path / "x.parquet", items=str(tmp_path / "items.csv"), item_id_column="sku",
                  title_column="name", text_columns=["about", "feat"], brand_column="maker", category_column="cat")
    items, _, report = load_data(cfg)
    got = items.to_pylist()
    assert got[A] == {"item_id": 0, "title": "Hex bolt", "description": "Steel bolt M6", "brand": "Acme",
                      "categories": ["Hardware"]}
    assert got[B]["title"] == "item B" and got[B]["description"] == "Just text"
    assert got[C]["description"] == "Strong" and got[D]["title"] == "item D"
    c = report["skips"]["counts"]
    assert c["item_empty_title"] == 1 and c["item_missing_from_item_table"] == 1
    assert report["skips"]["examples"]["item_missing_from_item_table"] == ["item D"]
    assert report["item_table_unused"] == 1
    _, _, bare = load_data(cfg_for(tmp_path / "x.parquet"))
    assert bare["skips"]["counts"]["item_without_text"] == 4
    with pytest.raises(DataError, match="items.csv field 'nope'"):
        load_data(cfg_for(tmp_path / "x.parquet", items=str(tmp_path / "items.csv"), item_id_column="sku",
                          title_column="name", text_columns=["nope"]))


def test_samples_stream_in_chunks(tmp_path):
    """Chunks of whole users: the written file is the same for any batch_rows."""
    pq.write_table(table_of(ROWS), tmp_path / "x.parquet")
    outs = []
    for rows in (1, 2, 1000):
        build_table(cfg_for(tmp_path / "x.parquet", batch_rows=rows), tmp_path / str(rows))
        outs.append(pq.read_table(tmp_path / str(rows) / "samples.parquet"))
    assert outs[0].equals(outs[1]) and outs[0].equals(outs[2])
    assert pq.ParquetFile(tmp_path / "1" / "samples.parquet").num_row_groups == 3  # one per user


def test_example_config_runs_data_stage(tmp_path):
    from raygen.config import load_config
    from raygen.pipeline import STAGES
    from raygen.runner import run_stages

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "examples/retail/config.yaml", [f"run_dir={tmp_path / 'run'}"])
    run_stages(cfg, STAGES, cfg.run_dir, only=["data"])  # the data stage needs no Ray
    data = tmp_path / "run" / "data"
    assert {"items.parquet", "samples.parquet", ITEM_MAP, USER_MAP} <= {p.name for p in data.iterdir()}
    ids = ItemIds.read(data)
    assert not ids.identity and ids.kind == "string"
    assert pq.read_table(data / "samples.parquet").num_rows > 100


def _mapped_run(tiny_run, tmp_path):
    """The tiny run with a string id map: internal item i is the team's 'sku-<i>'."""
    import shutil

    from raygen.data.idmap import write_id_map

    run = tmp_path / "mapped"
    shutil.copytree(tiny_run, run)
    write_id_map(run / "data" / ITEM_MAP, "item_id", pa.array([f"sku-{i}" for i in range(112)]))
    return run


def test_recommend_speaks_the_tables_own_ids(tiny_run, tmp_path, capsys):
    from raygen.cli import main
    from raygen.recommend import RecommendError, Recommender
    from raygen.recommend_batch import recommend_file

    run = _mapped_run(tiny_run, tmp_path)
    plain = Recommender(tiny_run).top_k([100, 101], k=4, hybrid=False)
    rec = Recommender(run)
    mapped = rec.top_k(["sku-100", "sku-101"], k=4, hybrid=False)
    assert [r["item_id"] for r in mapped] == [f"sku-{r['item_id']}" for r in plain]
    assert [r["score"] for r in mapped] == pytest.approx([r["score"] for r in plain])
    with pytest.raises(RecommendError, match=r"unknown item id\(s\) \['nope', 'sku-999'\]"):
        rec.top_k(["sku-100", "sku-999", "nope"], k=2)
    assert main(["recommend", "--run", str(run), "--history", "sku-100,sku-101", "-k", "4", "--json"]) == 0
    assert [r["item_id"] for r in json.loads(capsys.readouterr().out)] == [r["item_id"] for r in mapped]
    src = tmp_path / "users.jsonl"
    write_jsonl(src, [{"user_id": "A1", "history": ["sku-100", "sku-101"], "target": mapped[1]["item_id"]},
                      {"user_id": "A2", "history": ["sku-100", "sku-4242"]}])
    summary = recommend_file(rec, src, tmp_path / "recs.parquet", k=4, hybrid=False, progress=False)
    out = pq.read_table(tmp_path / "recs.parquet")
    assert out.schema.field("item_ids").type == pa.list_(pa.string())
    rows = out.to_pylist()
    assert rows[0]["item_ids"] == [r["item_id"] for r in mapped] and rows[0]["target"] == mapped[1]["item_id"]
    assert "sku-4242" in rows[1]["skipped"] and summary["metrics"]["hr@4"] == pytest.approx(1.0)


def test_config_block_from_yaml_keys():
    from raygen.config import load_config
    from raygen.configbase import ConfigError

    cfg = load_config(None, ["data.source=table", "data.table.interactions=s3://bucket/events/",
                             "data.table.text_columns=[about, bullets]", "data.table.repeats=keep"])
    assert cfg.data.table.text_columns == ["about", "bullets"] and cfg.data.table.repeats == "keep"
    with pytest.raises(ConfigError, match="data.table.interactions is required"):
        load_config(None, ["data.source=table"])
    with pytest.raises(ConfigError, match="repeats"):
        load_config(None, ["data.source=table", "data.table.interactions=x", "data.table.repeats=drop"])


def test_reads_from_s3_folder_and_glob(tmp_path):
    """An s3:// folder and glob on a local S3-compatible server (moto, 127.0.0.1) read like local files."""
    from _s3 import local_s3

    tbl = table_of(ROWS)
    pq.write_table(tbl, tmp_path / "x.parquet")
    expected = rows_of(load_data(cfg_for(tmp_path / "x.parquet"))[1])
    with local_s3() as s3:
        import pyarrow.fs as pafs

        fs, _ = pafs.FileSystem.from_uri(s3.uri())
        for key, part in (("events/a.parquet", tbl.slice(0, 4)), ("events/b.parquet", tbl.slice(4)),
                          ("events/_SUCCESS", None), ("other/notes.txt", None)):
            with fs.open_output_stream(f"{s3.bucket}/{key}") as f:
                if part is not None:
                    pq.write_table(part, f)
        assert rows_of(load_data(cfg_for(s3.uri("events")))[1]) == expected
        assert rows_of(load_data(cfg_for(s3.uri("events", "*.parquet")))[1]) == expected
        with pytest.raises(DataError, match="notes.txt: cannot tell the format"):
            load_data(cfg_for(s3.uri("other")))
