"""raygen.pin: pinned corpus + sids stage folders reused in another run (no Ray: stage folders made by hand)."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raygen.config import load_config
from raygen.pin import PIN_FILE, PinError, save_pin, table_digest, use_pin
from raygen.pipeline import STAGES
from raygen.runner import STAGE_MARKER, RunnerError, stage_done, stage_keys


def _stage(run, name, key, tables):
    d = run / name
    d.mkdir(parents=True)
    (d / STAGE_MARKER).write_text(f"{name} folder created by raygen; raygen may replace it\n")
    for fname, cols in tables.items():
        pq.write_table(pa.table(cols), d / fname)
    (d / "_SUCCESS").write_text(json.dumps({"key": key, "finished": 0}))


def _built(run, cfg, items=("a", "b", "c"), codes=((1, 2), (3, 4), (5, 6))):
    keys = stage_keys(cfg, STAGES)
    _stage(run, "data", keys["data"], {"items.parquet": {"item_id": list(items)}})
    _stage(run, "corpus", keys["corpus"], {"keywords.parquet": {"item_id": list(items), "kw": ["x", "y", "z"]}})
    _stage(run, "sids", keys["sids"], {"codes.parquet": {"item_id": list(items), "c0": [c[0] for c in codes],
                                                         "c1": [c[1] for c in codes]}})
    return keys


def _codes(run):
    return pq.read_table(run / "sids/codes.parquet").column("c0").to_pylist()


def test_pin_roundtrip_replaces_a_local_build(tmp_path):
    cfg = load_config(None)
    a, b, pin = tmp_path / "a", tmp_path / "b", tmp_path / "pin"
    keys = _built(a, cfg)
    manifest = save_pin(cfg, a, pin, ["corpus", "sids"], note="test")
    assert manifest["stages"] == {"corpus": keys["corpus"], "sids": keys["sids"]}
    assert list(manifest["upstream"]) == ["data"]             # what corpus + sids were built from
    assert json.loads((pin / PIN_FILE).read_text())["note"] == "test"
    # run b: the same data, its own (different) SID build, as another machine kind makes it
    _built(b, cfg, codes=((9, 9), (8, 8), (7, 7)))
    assert _codes(b) == [9, 8, 7]
    assert use_pin(cfg, b, pin) == ["corpus", "sids"]
    assert _codes(b) == [1, 3, 5]                             # the pinned build replaced the local one
    assert all(stage_done(b, s, keys[s]) for s in ("data", "corpus", "sids"))
    assert not list(b.glob(".*tmp")) and not list(b.glob(".*old"))
    assert table_digest(a / "sids") == table_digest(b / "sids")
    with pytest.raises(PinError, match="never overwritten"):
        save_pin(cfg, a, pin, ["corpus", "sids"])


def test_pin_refuses_other_data_other_config_and_damaged_files(tmp_path):
    cfg = load_config(None)
    a, pin = tmp_path / "a", tmp_path / "pin"
    _built(a, cfg)
    save_pin(cfg, a, pin, ["corpus", "sids"])
    other = tmp_path / "other"
    _built(other, cfg, items=("a", "b", "d"))
    with pytest.raises(PinError, match="tables differ"):
        use_pin(cfg, other, pin)
    assert _codes(other) == [1, 3, 5] and pq.read_table(other / "data/items.parquet").column(0).to_pylist()[2] == "d"
    # a config whose sids section differs gives another sids key
    cfg2 = load_config(None, [f"sids.codebook_size={cfg.sids.codebook_size * 2}"])
    with pytest.raises(PinError, match="stage 'sids' was pinned with key"):
        use_pin(cfg2, tmp_path / "a", pin)
    # no data stage yet
    with pytest.raises(PinError, match="run the 'data' stage first"):
        use_pin(cfg, tmp_path / "empty", pin)
    # a changed pinned file
    pq.write_table(pa.table({"item_id": ["a"], "c0": [0], "c1": [0]}), pin / "sids/codes.parquet")
    with pytest.raises(PinError, match="codes.parquet"):
        use_pin(cfg, a, pin)


def test_pin_never_replaces_a_folder_raygen_did_not_write(tmp_path):
    cfg = load_config(None)
    a, b, pin = tmp_path / "a", tmp_path / "b", tmp_path / "pin"
    _built(a, cfg)
    save_pin(cfg, a, pin, ["corpus", "sids"])
    keys = stage_keys(cfg, STAGES)
    _stage(b, "data", keys["data"], {"items.parquet": {"item_id": ["a", "b", "c"]}})
    (b / "sids").mkdir()
    (b / "sids/mine.txt").write_text("a user's file")
    with pytest.raises(RunnerError, match="never deletes it"):
        use_pin(cfg, b, pin)
    assert (b / "sids/mine.txt").read_text() == "a user's file" and not (b / "corpus").exists()


def test_save_pin_needs_finished_stages(tmp_path):
    cfg = load_config(None)
    with pytest.raises(PinError, match="not finished"):
        save_pin(cfg, tmp_path / "nothing", tmp_path / "pin", ["corpus", "sids"])
    with pytest.raises(PinError, match="unknown stage"):
        save_pin(cfg, tmp_path / "nothing", tmp_path / "pin", ["bogus"])


def test_cli_pin_and_run_with_a_bad_pin(tmp_path, capsys):
    from pathlib import Path

    from raygen.cli import main

    config = str(Path(__file__).resolve().parents[1] / "configs/default.yaml")
    cfg = load_config(config)
    a, pin = tmp_path / "a", tmp_path / "pin"
    keys = _built(a, cfg)
    assert main(["pin", "--config", config, "--run-dir", str(a), "--out", str(pin), "--note", "cli"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["pinned"] == {"corpus": keys["corpus"], "sids": keys["sids"]} and printed["upstream"] == ["data"]
    assert json.loads((pin / PIN_FILE).read_text())["note"] == "cli"
    # errors are one readable line and exit code 2, before anything runs
    assert main(["pin", "--config", config, "--run-dir", str(a), "--out", str(pin)]) == 2
    assert "never overwritten" in capsys.readouterr().err
    (tmp_path / "notapin").mkdir()
    assert main(["run", "--config", config, "--run-dir", str(tmp_path / "b"), "--pin", str(tmp_path / "notapin")]) == 2
    err = capsys.readouterr().err
    assert "raygen: error:" in err and "pin.json" in err and not (tmp_path / "b").exists()


def test_pin_refuses_to_swap_sids_under_finished_downstream_stages(tmp_path):
    cfg = load_config(None)
    a, b, pin = tmp_path / "a", tmp_path / "b", tmp_path / "pin"
    keys = _built(a, cfg)
    save_pin(cfg, a, pin, ["corpus", "sids"])
    # run a already holds exactly the pinned build: using the pin there is a no-op, even with an lm stage on it
    _stage(a, "lm", keys["lm"], {"x.parquet": {"v": [1]}})
    stamp = (a / "sids/codes.parquet").stat().st_mtime_ns
    assert use_pin(cfg, a, pin) == ["corpus", "sids"]
    assert (a / "sids/codes.parquet").stat().st_mtime_ns == stamp and (a / "lm").exists()
    # run b: another SID build with an lm stage trained on it: swapping its SIDs would leave lm stale
    _built(b, cfg, codes=((9, 9), (8, 8), (7, 7)))
    _stage(b, "lm", keys["lm"], {"x.parquet": {"v": [1]}})
    with pytest.raises(PinError, match=r"finished stages built on the outputs the pin would replace \(lm"):
        use_pin(cfg, b, pin)
    assert _codes(b) == [9, 8, 7]                             # nothing was replaced
