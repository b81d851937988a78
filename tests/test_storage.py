"""raygen.storage on local paths and on a local S3 server (moto)."""
from __future__ import annotations

from pathlib import Path

import pytest

from raygen import storage


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYGEN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _folder(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)) * 3)
    return root


def test_is_uri_and_join():
    assert storage.is_uri("s3://b/p") and storage.is_uri("file:///tmp/x") and storage.is_uri("gs://b")
    assert not storage.is_uri("runs/x") and not storage.is_uri("/abs") and not storage.is_uri(Path("s3://b"))
    assert storage.join("s3://b/run/", "sft", "model") == "s3://b/run/sft/model"
    assert storage.join("s3://b/run?scheme=http", "x") == "s3://b/run/x?scheme=http"
    assert storage.join("runs/x", "a", "b") == str(Path("runs/x/a/b"))


def test_local_paths_are_not_copied(tmp_path, cache):
    src = _folder(tmp_path / "src")
    assert storage.materialize(str(src)) == src  # as is: nothing downloaded
    assert storage.materialize(f"file://{src}") == src
    fs, path = storage.filesystem("rel/dir")
    assert Path(path).is_absolute() and type(fs).__name__ == "LocalFileSystem"
    assert not cache.exists()


def test_local_folder_helpers(tmp_path):
    src = _folder(tmp_path / "src")
    dst = str(tmp_path / "dst")
    assert storage.upload_folder(src, dst, exclude=("a.txt",)) == 1
    assert storage.list_files(dst) == ["sub/b.bin"]
    assert storage.copy_folder(str(src), str(tmp_path / "cp")) == 2
    assert _tree(tmp_path / "cp") == _tree(src)
    storage.write_bytes(str(tmp_path / "f" / "x.json"), b"{}")
    assert storage.read_bytes(str(tmp_path / "f" / "x.json")) == b"{}"
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(str(tmp_path / "missing"))
    storage.delete_folder(str(tmp_path / "cp"))
    assert not (tmp_path / "cp").exists()


def test_s3_roundtrip_and_materialize(tmp_path, cache, s3):
    src = _folder(tmp_path / "src")
    loc = s3.uri("run", "stage")
    assert storage.upload_folder(src, loc) == 2
    # really on the server (checked with boto3, not with raygen's own reader)
    assert s3.keys("run/") == ["run/stage/a.txt", "run/stage/sub/b.bin"]
    assert storage.exists(loc) and storage.is_file(storage.join(loc, "a.txt"))
    assert not storage.exists(s3.uri("run", "nothing"))
    assert storage.list_files(loc) == ["a.txt", "sub/b.bin"]

    local = storage.materialize(loc, key="k1")
    assert local.is_relative_to(cache / "mirror") and _tree(local) == _tree(src)
    storage.write_bytes(storage.join(loc, "a.txt"), b"changed")
    assert storage.materialize(loc, key="k1") == local and (local / "a.txt").read_text() == "alpha"  # cached
    fresh = storage.materialize(loc, key="k2")  # another key: downloaded again
    assert fresh != local and (fresh / "a.txt").read_text() == "changed"
    assert not [p for p in (cache / "mirror").iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(FileNotFoundError):
        storage.materialize(s3.uri("nothing-here"))


def test_s3_copy_delete_and_missing(s3, tmp_path):
    src = _folder(tmp_path / "src")
    storage.upload_folder(src, s3.uri("a"))
    assert storage.copy_folder(s3.uri("a"), s3.uri("b")) == 2
    assert s3.keys("b/") == ["b/a.txt", "b/sub/b.bin"]
    storage.delete_folder(s3.uri("a"))
    assert s3.keys("a/") == [] and s3.keys("b/") == ["b/a.txt", "b/sub/b.bin"]
    storage.delete_folder(s3.uri("a"))  # absent: nothing
    storage.delete_file(s3.uri("b", "a.txt"))
    assert [k for k in s3.keys() if not k.endswith("/")] == ["b/sub/b.bin"]  # pyarrow may leave a "b/" marker
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(s3.uri("b", "a.txt"))
    assert storage.list_files(s3.uri("zzz")) == []


# --- a run folder on S3: the runner's commit protocol (raygen.runstore) ---------------------------------

import json  # noqa: E402

from raygen import runstore  # noqa: E402
from raygen.config import PipelineConfig  # noqa: E402
from raygen.runner import STAGE_MARKER, SUCCESS, RunnerError, Stage, run_stages  # noqa: E402


def _stages(calls, fail_in=None, seen=None):
    def make(name):
        def run(ctx):
            calls.append(name)
            (ctx.out / f"{name}.txt").write_text(f"{name}{ctx.cfg.data.seed if name == 'a' else ''}")
            if name == fail_in:
                raise RuntimeError("boom")
            if name != "a":
                up = "a" if name == "b" else "b"
                assert (ctx.input(up) / f"{up}.txt").exists()  # pulled into the mirror on demand
                if seen is not None:
                    seen[name] = (ctx.input_location(up), ctx.location("ray_train"))
        return run
    return [Stage("a", make("a"), sections=("data",)), Stage("b", make("b"), deps=("a",), sections=("sids",)),
            Stage("c", make("c"), deps=("b",), sections=("corpus",))]


def _payload(s3, prefix=""):
    return [k for k in s3.keys(prefix) if not k.endswith("/")]


def test_uri_run_commits_skips_and_pulls(s3, cache):
    run, calls, seen = s3.uri("run"), [], {}
    summary = run_stages(PipelineConfig(), _stages(calls, seen=seen), run)
    assert [summary[s]["status"] for s in "abc"] == ["ran"] * 3
    keys = _payload(s3, "run/")
    assert keys == sorted(f"run/{s}/{f}" for s in "abc" for f in (STAGE_MARKER, SUCCESS, f"{s}.txt", "metrics.json"))
    assert json.loads(storage.read_bytes(s3.uri("run", "b", SUCCESS)))["key"] == summary["b"]["key"]
    assert seen["c"] == (s3.uri("run", "b"), s3.uri("run", "ray_train"))
    calls.clear()
    assert run_stages(PipelineConfig(), _stages(calls), run)["c"]["status"] == "skipped" and calls == []
    # a fresh driver (empty mirror): re-running c pulls b from the bucket
    import shutil
    shutil.rmtree(runstore.mirror_of(run))
    run_stages(PipelineConfig(), _stages(calls), run, force=["c"])
    assert calls == ["c"] and (runstore.mirror_of(run) / "b" / "b.txt").read_text() == "b"


def test_uri_run_failed_stage_leaves_nothing_trusted(s3, cache):
    run, calls = s3.uri("run"), []
    first = run_stages(PipelineConfig(), _stages(calls), run)
    cfg = PipelineConfig()
    cfg.sids.levels = 4  # b's key changes
    with pytest.raises(RuntimeError, match="boom"):
        run_stages(cfg, _stages(calls, fail_in="b"), run)
    # the bucket still holds the finished b of the first run, trusted with its key; nothing of the failure
    assert runstore.done_key(run, "b") == first["b"]["key"] and not _payload(s3, "run/.b.tmp")


def test_uri_run_crash_mid_commit(s3, cache, monkeypatch):
    run, calls = s3.uri("run"), []
    run_stages(PipelineConfig(), _stages(calls), run)
    cfg = PipelineConfig()
    cfg.corpus.normalize = not cfg.corpus.normalize  # c's key changes
    real = storage.copy_folder
    monkeypatch.setattr(storage, "copy_folder", lambda src, dst: (_ for _ in ()).throw(OSError("network down")))
    with pytest.raises(OSError, match="network down"):
        run_stages(cfg, _stages(calls), run)
    # the old c lost its _SUCCESS before anything changed; the new one is only under the temporary prefix
    assert runstore.done_key(run, "c") is None and _payload(s3, "run/.c.tmp/")
    monkeypatch.setattr(storage, "copy_folder", real)
    from raygen.runner import clean_leftovers
    assert clean_leftovers(run, ["a", "b", "c"]) == [s3.uri("run", ".c.tmp")]
    calls.clear()
    summary = run_stages(cfg, _stages(calls), run)
    assert calls == ["c"] and runstore.done_key(run, "c") == summary["c"]["key"]


def test_uri_run_never_deletes_foreign_objects(s3, cache, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    storage.upload_folder(tmp_path / "x", s3.uri("run", "b"))
    storage.upload_folder(tmp_path / "x", s3.uri("run", ".c.tmp"))
    calls = []
    with pytest.raises(RunnerError, match="run/b holds objects that were not written by raygen"):
        run_stages(PipelineConfig(), _stages(calls), s3.uri("run"))
    assert calls == []
    from raygen.runner import clean_leftovers
    assert clean_leftovers(s3.uri("run"), ["c"]) == []
    assert _payload(s3) == ["run/.c.tmp/notes.txt", "run/b/notes.txt"]


def test_uri_pipeline_lock_and_config(s3, cache, monkeypatch):
    import raygen.pipeline
    import raygen.ray_utils
    from raygen.pipeline import CONFIG_FILE, CONFIG_HEADER, run_pipeline

    monkeypatch.setattr(raygen.ray_utils, "init_ray", lambda cfg=None: None)
    monkeypatch.setattr(raygen.pipeline, "STAGES", _stages([]))
    cfg = PipelineConfig()
    cfg.run_dir = s3.uri("run")
    assert run_pipeline(cfg)["c"]["status"] == "ran"
    assert storage.read_bytes(s3.uri("run", CONFIG_FILE)).decode().startswith(CONFIG_HEADER)
    assert "run/.raygen_lock.json" not in s3.keys()
    from raygen.runlock import RunLock
    with RunLock(s3.uri("run"), settle_s=0.05):
        with pytest.raises(RunnerError, match="is in use by host"):
            run_pipeline(cfg)


def test_pin_from_and_into_uri_runs(s3, cache, tmp_path):
    """`raygen pin --run-dir s3://...`, then `raygen run --pin s3://...` into an S3 run with its own SID build."""
    import pyarrow.parquet as pq

    from raygen.config import load_config
    from raygen.pin import PIN_FILE, _use_pin_uri, local_pin, save_pin
    from test_pin import _built

    cfg = load_config(None)
    _built(tmp_path / "a", cfg)
    _built(tmp_path / "b", cfg, codes=((9, 9), (8, 8), (7, 7)))
    storage.upload_folder(tmp_path / "a", s3.uri("a"))
    storage.upload_folder(tmp_path / "b", s3.uri("b"))
    save_pin(cfg, s3.uri("a"), tmp_path / "pin", ["corpus", "sids"])  # from a URI run
    storage.upload_folder(tmp_path / "pin", s3.uri("pins", "p1"))
    pin = local_pin(s3.uri("pins", "p1"))
    assert pin.is_relative_to(cache) and (pin / PIN_FILE).is_file()
    assert _use_pin_uri(cfg, s3.uri("b"), pin) == ["corpus", "sids"]
    fs, _ = storage.filesystem(s3.uri("b"))
    codes = pq.read_table(f"{s3.bucket}/b/sids/codes.parquet", filesystem=fs).column("c0").to_pylist()
    assert codes == [1, 3, 5]  # the pinned build, committed to the bucket
    assert runstore.done_key(s3.uri("b"), "sids") is not None and not _payload(s3, "b/.sids.tmp")
    assert "b/.raygen_lock.json" not in s3.keys()


def test_recommend_from_a_uri_run(s3, tmp_path, monkeypatch, capsys, tiny_model_dir, tiny_catalog, fixture_stages):
    """A finished run in the bucket serves `raygen recommend --run s3://...` from a fresh node's cache."""
    from raygen.cli import main
    from raygen.config import load_config
    from raygen.pipeline import save_config

    run = s3.uri("run")
    monkeypatch.setenv("RAYGEN_CACHE", str(tmp_path / "driver"))
    cfg = load_config(None, [f"run_dir={run}", f"lm.model={tiny_model_dir}", "lm.init=random", "align.enabled=false",
                             "sft.enabled=false", "rl.enabled=false", "eval.bf16=false"])
    stages = [s for s in fixture_stages(tiny_catalog) if s.name not in ("eval", "report")]
    assert run_stages(cfg, stages, run, on_commit=lambda _: save_config(cfg, run))["rl"]["status"] == "ran"
    monkeypatch.setenv("RAYGEN_CACHE", str(tmp_path / "serving-node"))  # nothing of the driver's mirror
    history = ",".join(map(str, tiny_catalog["samples"].column("history")[0].as_py()))
    capsys.readouterr()
    assert main(["recommend", "--run", run, "--history", history, "-k", "3", "--json"]) == 0, capsys.readouterr().err
    recs = json.loads(capsys.readouterr().out)
    assert len(recs) == 3 and all(r["sid"] for r in recs)
    assert (tmp_path / "serving-node" / "mirror").is_dir() and not (tmp_path / "serving-node" / "runs").exists()


def test_add_items_into_a_uri_run(s3, cache, tmp_path, tiny_run, tiny_catalog):
    """`raygen add-items --run s3://...`: the additions go back to the bucket (under the run lock) and a
    Recommender on the URI knows the new items."""
    from test_recommend import _HashEmbedder, _run_with_quantizer, _write_items

    from raygen.additions import ADDITIONS_FILE, add_items
    from raygen.recommend import Recommender

    local = _run_with_quantizer(tiny_run, tiny_catalog, tmp_path)
    storage.upload_folder(local, s3.uri("run"))
    items = _write_items(tmp_path / "new.jsonl", [{"item_id": 500, "title": "new gadget", "brand": "zeta"}])
    assert add_items(s3.uri("run"), items, embedder=_HashEmbedder())["n_added"] == 1
    assert f"run/{ADDITIONS_FILE.as_posix()}" in s3.keys() and "run/.raygen_lock.json" not in s3.keys()
    assert Recommender(s3.uri("run")).titles[500] == "new gadget"
