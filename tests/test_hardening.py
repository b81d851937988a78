"""Issue 37, hostile input: bounded config loading, OS errors as one line, an unreachable Ray cluster,
BOM-prefixed CSVs, symlink loops, split warnings, beam width checked against the catalog and a bounded
beam search."""
from __future__ import annotations

import csv
import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raygen.config import load_config
from raygen.configbase import ConfigError
from raygen.data.schema import DataError


def _err_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("raygen: error: ") and "Traceback" not in err, err[:2000]
    assert err.count("\n") == 1, err[:2000]
    return err


# --- 1. config loading is bounded ---------------------------------------------------------------------


def _laughs(depth: int) -> str:
    """A 'billion laughs' flow list: level i is ten aliases of level i-1 (10**depth leaves)."""
    levels = ["&l0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i in range(1, depth):
        levels.append(f"&l{i} [{', '.join([f'*l{i - 1}'] * 10)}]")
    return f"[{', '.join(levels)}]"


@pytest.mark.parametrize("section, key", [("data", "path"), ("eval", "ks")])
def test_nested_yaml_aliases_fail_fast_with_one_line(tmp_path, section, key):
    p = tmp_path / "bomb.yaml"
    p.write_text(f"run_dir: runs/x\n{section}:\n  {key}: {_laughs(6)}\n")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert time.perf_counter() - t0 < 1.0
    msg = str(e.value)
    assert msg.startswith(f"{p}:3:") and "alias" in msg and "\n" not in msg and len(msg) < 400, msg[:1000]


def test_an_alias_bomb_in_an_override_is_refused():
    with pytest.raises(ConfigError, match=r"^command-line override 'eval.ks=.*alias") as e:
        load_config(None, [f"eval.ks={_laughs(6)}"])
    assert len(str(e.value)) < 600


def test_modest_anchors_still_load(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("eval:\n  ks: &ks [1, 5]\n  beam_width: 5\nrl:\n  eval_rows: 0\n")
    assert load_config(p).eval.ks == [1, 5]


def test_cli_cuts_a_long_error_message(tmp_path, capsys):
    from raygen.cli import main

    p = tmp_path / "c.yaml"
    p.write_text(f"eval:\n  ks: {'x' * 100_000}\n")
    assert main(["run", "--config", str(p)]) == 2
    err = _err_line(capsys)
    assert len(err) < 700 and "more chars)" in err


def test_a_config_file_over_the_size_limit_is_refused(tmp_path, monkeypatch):
    import raygen.configbase as cb

    monkeypatch.setattr(cb, "MAX_CONFIG_BYTES", 1000)
    p = tmp_path / "big.yaml"
    p.write_text("# padding\n" * 200 + "run_dir: runs/x\n")
    with pytest.raises(ConfigError, match=r"big.yaml: .*larger than 1000 bytes"):
        load_config(p)


# --- 2. every OS error is a one-line error -------------------------------------------------------------


@pytest.mark.parametrize("exc, needle", [
    (PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/data/x"), "Permission denied"),
    (OSError(errno.EROFS, os.strerror(errno.EROFS), "/ro/run"), "Read-only file system"),
    (NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), "/dev/null/run"), "Not a directory"),
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "No space left on device"),
    (IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), "/tmp"), "Is a directory"),
    (OSError(errno.ELOOP, os.strerror(errno.ELOOP), "/data/loop"), "symlink loop"),
])
def test_cli_os_errors_are_one_line(monkeypatch, capsys, exc, needle):
    import raygen.cli as cli

    def boom(args):
        raise exc

    monkeypatch.setattr(cli, "cmd_stages", boom)
    assert cli.main(["stages"]) == 2
    err = _err_line(capsys)
    assert needle in err
    if exc.filename:
        assert exc.filename in err


def test_cli_run_dir_under_a_file_is_one_line(capsys):
    from raygen.cli import main

    assert main(["run", "--config", "configs/default.yaml", "--run-dir", "/dev/null/run", "--stages", "data"]) == 2
    _err_line(capsys)


# --- 3. an unreachable Ray cluster is a bounded error ----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_ray_address_fails_within_the_timeout():
    """In a fresh process (this one may hold the integration tests' Ray): the timed part is init_ray alone."""
    port = _free_port()
    code = f"""
import json, time
from raygen.config import RayConfig
from raygen.ray_utils import init_ray, worker_env
worker_env()  # its imports (torch) are not what is timed
t0 = time.perf_counter()
try:
    init_ray(RayConfig(address="127.0.0.1:{port}", connect_timeout_s=1.5))
    print(json.dumps({{"error": None}}))
except ConnectionError as e:
    print(json.dumps({{"error": str(e), "seconds": time.perf_counter() - t0}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["error"] is not None and res["seconds"] < 5
    msg = res["error"]
    assert f"127.0.0.1:{port}" in msg and "ray.connect_timeout_s" in msg and "\n" not in msg


def test_the_probe_passes_a_listening_port():
    from raygen.ray_utils import wait_for_port

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        wait_for_port(f"127.0.0.1:{srv.getsockname()[1]}", timeout_s=2.0)


def test_connect_timeout_must_be_positive():
    with pytest.raises(ConfigError, match=r"ray.connect_timeout_s: must be > 0"):
        load_config(None, ["ray.connect_timeout_s=0"])


# --- 4. data: BOM, symlink loops, split warnings ---------------------------------------------------------

COLUMNS = ["user_id", "history_item_title", "item_title", "history_item_id", "item_id", "history_item_sid",
           "item_sid"]
ITEMS = {str(i): {"title": f"Item {i}", "description": "", "brand": "", "categories": ""} for i in range(6)}


def _release(root: Path, valid, test, bom: bool = False):
    from raygen.data.config import DataConfig

    bom_bytes = b"\xef\xbb\xbf" if bom else b""
    (root / "items.json").write_bytes(bom_bytes + json.dumps(ITEMS).encode())
    for name, rows in (("valid.csv", valid), ("test.csv", test)):
        with open(root / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS)
            for user, hist, target in rows:
                w.writerow([user, "[]", "t", hist, target, "[]", "<a_1>"])
        if bom:
            (root / name).write_bytes(bom_bytes + (root / name).read_bytes())
    return DataConfig(source="minionerec", path=str(root))


VALID = [["u1", "[0, 1]", 2], ["u2", "[3]", 4]]
TEST = [["u1", "[0, 1, 2]", 3], ["u2", "[3, 4]", 5]]


def test_bom_prefixed_files_are_read(tmp_path):
    from raygen.data.minionerec import load_minionerec

    (tmp_path / "plain").mkdir()
    (tmp_path / "bom").mkdir()
    items, samples, _ = load_minionerec(_release(tmp_path / "plain", VALID, TEST))
    items_b, samples_b, report = load_minionerec(_release(tmp_path / "bom", VALID, TEST, bom=True))
    assert items_b.equals(items) and samples_b.equals(samples)
    assert report["skips"]["total"] == 0


def test_a_symlink_loop_is_named_as_such(tmp_path):
    from raygen.data.amazon2023 import load_amazon2023
    from raygen.data.config import DataConfig
    from raygen.data.minionerec import load_minionerec

    cfg = _release(tmp_path, VALID, TEST)
    (tmp_path / "items.json").unlink()
    os.symlink("items.json", tmp_path / "items.json")  # points at itself
    with pytest.raises(DataError, match="symlink loop") as e:
        load_minionerec(cfg)
    assert "items.json" in str(e.value)
    os.symlink("Beauty.jsonl", tmp_path / "Beauty.jsonl")
    with pytest.raises(DataError, match="symlink loop"):
        load_amazon2023(DataConfig(source="amazon2023", path=str(tmp_path), category="Beauty"))


def test_an_empty_valid_split_is_accepted_with_a_warning(tmp_path, caplog):
    from raygen.data.load import load_data

    with caplog.at_level("WARNING", logger="raygen"):
        _, samples, report = load_data(_release(tmp_path, [], TEST))
    assert report["samples"]["valid"] == 0 and report["samples"]["test"] == 2
    assert any("valid split is empty" in w for w in report["warnings"])
    assert "valid split is empty" in caplog.text


def test_valid_equal_to_test_is_accepted_with_a_warning(tmp_path, caplog):
    from raygen.data.load import load_data

    with caplog.at_level("WARNING", logger="raygen"):
        _, _, report = load_data(_release(tmp_path, TEST, list(reversed(TEST))))
    assert any("same 2 rows" in w for w in report["warnings"])
    assert "same 2 rows" in caplog.text


def test_distinct_splits_have_no_warnings(tmp_path):
    from raygen.data.load import load_data

    assert load_data(_release(tmp_path, VALID, TEST))[2]["warnings"] == []


# --- 5. beam width against the catalog; a bounded beam search ---------------------------------------------


def _finished_data(run_dir: Path, cfg, n_items: int) -> None:
    """A finished data stage of ``cfg`` holding ``n_items`` items (what the pre-flight check reads)."""
    from raygen.data.schema import ITEMS_SCHEMA
    from raygen.pipeline import stage
    from raygen.runner import SUCCESS, stage_key

    d = run_dir / "data"
    d.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"item_id": i, "title": f"t{i}", "description": "", "brand": "",
                                          "categories": []} for i in range(n_items)], schema=ITEMS_SCHEMA),
                   d / "items.parquet")
    (d / SUCCESS).write_text(json.dumps({"key": stage_key(cfg, stage("data"), {})}))


def test_beam_width_over_the_catalog_is_refused_before_any_stage(tmp_path):
    from raygen.config import check_against_data

    cfg = load_config(None, [f"run_dir={tmp_path}", "data.source=minionerec", f"data.path={tmp_path}",
                             "eval.beam_width=100000"])
    check_against_data(cfg)  # no finished data stage, size unknown: nothing to check yet
    _finished_data(tmp_path, cfg, 300)
    with pytest.raises(ConfigError, match=r"eval.beam_width: 100000 .*300 items") as e:
        check_against_data(cfg)
    assert "\n" not in str(e.value)
    cfg.eval.beam_width = 300
    check_against_data(cfg)


@pytest.mark.parametrize("overrides, key", [(["rl.group_size=301"], "rl.group_size"),
                                            (["sft.valid_beam=301", "sft.valid_every=5"], "sft.valid_beam"),
                                            (["eval.beam_width=301"], "eval.beam_width")])
def test_synthetic_catalog_size_is_known_from_the_config(overrides, key):
    from raygen.config import check_against_data

    check_against_data(load_config(None, ["data.synthetic.n_items=301", *overrides]))
    cfg = load_config(None, ["data.synthetic.n_items=300", *overrides])
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        check_against_data(cfg)


def test_sampled_rollouts_may_outnumber_the_catalog():
    from raygen.config import check_against_data

    check_against_data(load_config(None, ["data.synthetic.n_items=300", "rl.group_size=400",
                                          "rl.rollout_mode=sample"]))


def test_cli_eval_with_a_huge_beam_is_one_line(tmp_path, capsys):
    from raygen.cli import main

    cfg = load_config("configs/default.yaml", [f"run_dir={tmp_path}"])
    _finished_data(tmp_path, cfg, 300)
    assert main(["run", "--config", "configs/default.yaml", "--run-dir", str(tmp_path), "--stages", "eval",
                 "eval.beam_width=100000"]) == 2
    assert "eval.beam_width" in _err_line(capsys)
    assert not (tmp_path / ".eval.tmp").exists()


VOCAB, N_LEVELS, N_CODES, N_ITEMS = 200, 3, 8, 30
PAD = 3


@pytest.fixture(scope="module")
def beam_setup(tiny_llama, random_sid_matrix):
    import torch

    model = tiny_llama(vocab_size=VOCAB, initializer_range=0.2)
    sid = random_sid_matrix(N_ITEMS, N_CODES, N_LEVELS, VOCAB - N_LEVELS * N_CODES)
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(PAD + 1, 150, (n,), generator=g).tolist() for n in (3, 9, 5, 12, 1)]
    return model, sid, prompts


def test_beam_search_keeps_at_most_one_beam_per_item(beam_setup):
    from raygen.generation.beam import constrained_beam_search, search_bytes

    model, sid, prompts = beam_setup
    full, full_scores = constrained_beam_search(model, prompts, sid, beam_width=N_ITEMS, pad_id=PAD, batch_size=2)
    # what one row's search costs is counted for the beams the catalog can fill, not the beams asked for
    assert search_bytes(model, 100_000, 12, N_ITEMS, N_LEVELS) == search_bytes(model, N_ITEMS, 12, N_ITEMS, N_LEVELS)
    items, scores = constrained_beam_search(model, prompts, sid, beam_width=100_000, pad_id=PAD, batch_size=2,
                                            max_bytes=64 * 2 ** 20)
    assert items.shape == (5, 100_000)
    assert (items[:, :N_ITEMS] == full).all() and (items[:, N_ITEMS:] == -1).all()
    assert (scores[:, :N_ITEMS] == full_scores).all()


def test_beam_search_fits_its_batches_into_the_budget(beam_setup, caplog):
    from raygen.generation.beam import constrained_beam_search, search_bytes

    model, sid, prompts = beam_setup
    ref, _ = constrained_beam_search(model, prompts, sid, beam_width=8, pad_id=PAD, batch_size=5)
    one_row = search_bytes(model, 8, 12, N_ITEMS, N_LEVELS)
    with caplog.at_level("WARNING", logger="raygen"):
        items, _ = constrained_beam_search(model, prompts, sid, beam_width=8, pad_id=PAD, batch_size=5,
                                           max_bytes=int(one_row * 1.5) + 5 * 8 * 12)
    assert (items == ref).all()
    assert "rows per forward pass" in caplog.text


def test_beam_search_refuses_a_row_over_the_budget(beam_setup):
    from raygen.generation.beam import BeamMemoryError, constrained_beam_search

    model, sid, prompts = beam_setup
    with pytest.raises(BeamMemoryError, match=r"beam_width 30 .* GiB") as e:
        constrained_beam_search(model, prompts, sid, beam_width=30, pad_id=PAD, max_bytes=1000)
    assert isinstance(e.value, ConfigError) and "\n" not in str(e.value)
