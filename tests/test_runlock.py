"""The run lock (raygen.runlock) on a local folder and on a local S3 server (moto)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from raygen import storage
from raygen.runlock import LOCK_FILE, RunLock
from raygen.runner import RunnerError
from _s3 import local_s3

FAST = dict(ttl_s=30.0, heartbeat_s=0.2, settle_s=0.1, poll_s=0.05)


@pytest.fixture(params=["local", "s3"])
def run_loc(request, tmp_path):
    if request.param == "local":
        yield str(tmp_path / "run")
    else:
        with local_s3() as s3:
            yield s3.uri("run")


def _lease(loc: str) -> dict:
    return json.loads(storage.read_bytes(storage.join(loc, LOCK_FILE)))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait(timeout=30)
    return p.pid


def test_second_holder_refused_with_holder_named(run_loc):
    with RunLock(run_loc, **FAST) as first:
        lease = _lease(run_loc)
        assert lease["token"] == first.token and lease["host"] == socket.gethostname()
        with pytest.raises(RunnerError) as e:
            RunLock(run_loc, **FAST).acquire()
        msg = str(e.value)
        assert "\n" not in msg and f"pid {lease['pid']}" in msg and socket.gethostname() in msg and "--wait-lock" in msg
        first.check()  # still ours
    assert not storage.exists(storage.join(run_loc, LOCK_FILE))  # released
    with RunLock(run_loc, **FAST):  # free again
        pass


def test_heartbeat_refreshes_and_release_on_exception(run_loc):
    with pytest.raises(ValueError):
        with RunLock(run_loc, **FAST):
            before = _lease(run_loc)["heartbeat"]
            time.sleep(0.7)
            assert _lease(run_loc)["heartbeat"] > before
            raise ValueError("stage failed")
    assert not storage.exists(storage.join(run_loc, LOCK_FILE))


def test_waits_for_the_holder_then_gets_it(run_loc):
    first = RunLock(run_loc, **FAST).acquire()
    threading.Timer(0.5, first.release).start()
    t0 = time.time()
    with RunLock(run_loc, wait_s=20, **FAST) as second:
        assert _lease(run_loc)["token"] == second.token
    assert 0.4 < time.time() - t0 < 15
    with RunLock(run_loc, **FAST):  # a bounded wait that runs out refuses
        t0 = time.time()
        with pytest.raises(RunnerError, match="waited 1 s"):
            RunLock(run_loc, wait_s=0.6, **FAST).acquire()
        assert time.time() - t0 < 5


@pytest.mark.parametrize("how", ["expired", "dead_pid", "damaged"])
def test_stale_lease_taken_over(run_loc, how):
    now = time.time()
    stale = {"token": "old", "host": socket.gethostname(), "pid": _dead_pid(), "started": now, "heartbeat": now}
    if how == "expired":
        stale.update(host="elsewhere", pid=1, heartbeat=now - 3600)
    body = b"{not json" if how == "damaged" else json.dumps(stale).encode()
    storage.write_bytes(storage.join(run_loc, LOCK_FILE), body)
    with RunLock(run_loc, **FAST) as lock:
        assert _lease(run_loc)["token"] == lock.token
    # a live lease on another host with a fresh heartbeat is NOT stale
    stale.update(host="elsewhere", pid=1, heartbeat=time.time())
    storage.write_bytes(storage.join(run_loc, LOCK_FILE), json.dumps(stale).encode())
    with pytest.raises(RunnerError, match="host elsewhere pid 1"):
        RunLock(run_loc, **FAST).acquire()


def test_lost_lease_detected_by_check(run_loc):
    lock = RunLock(run_loc, **FAST).acquire()
    try:
        other = {"token": "thief", "host": "h2", "pid": 7, "started": time.time(), "heartbeat": time.time()}
        storage.write_bytes(storage.join(run_loc, LOCK_FILE), json.dumps(other).encode())
        with pytest.raises(RunnerError, match="was lost .*host h2 pid 7"):
            lock.check()
    finally:
        lock.release()
    assert _lease(run_loc)["token"] == "thief"  # release never deletes another owner's lease


def test_two_processes_race_one_wins(tmp_path):
    """Two OS processes start on one local run folder at the same moment: exactly one holds it."""
    run = tmp_path / "run"
    code = ("import sys,time; from raygen.runlock import RunLock; from raygen.runner import RunnerError\n"
            "print('ready', flush=True); sys.stdin.readline()\n"  # both imported: start together
            "try:\n    l = RunLock(sys.argv[1], heartbeat_s=0.2).acquire()\n"
            "except RunnerError:\n    print('refused'); sys.exit(0)\n"
            "print('held', flush=True); time.sleep(1.0); l.release()\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert outs == ["held", "refused"]


# --- the pipeline holds the lock; config.yaml only on commit; refused run folders (issue 37) ----------

import os  # noqa: E402
from pathlib import Path  # noqa: E402

import raygen.pipeline  # noqa: E402
from raygen.config import PipelineConfig  # noqa: E402
from raygen.pipeline import CONFIG_FILE, CONFIG_HEADER, check_run_dir, run_pipeline  # noqa: E402
from raygen.runner import Stage  # noqa: E402


def _toy(fail: bool = False):
    def a(ctx):
        (ctx.out / "a.txt").write_text(str(ctx.cfg.data.seed))

    def b(ctx):
        (ctx.out / "half.txt").write_text("half")
        if fail:
            raise MemoryError("beam width blew up")
        (ctx.out / "b.txt").write_text((ctx.input("a") / "a.txt").read_text())

    return [Stage("a", a, sections=("data",)), Stage("b", b, deps=("a",), sections=("eval",))]


@pytest.fixture
def toy_pipeline(monkeypatch):
    import raygen.ray_utils

    monkeypatch.setattr(raygen.ray_utils, "init_ray", lambda cfg=None: None)
    monkeypatch.setattr(raygen.pipeline, "STAGES", _toy())
    return lambda fail=False: monkeypatch.setattr(raygen.pipeline, "STAGES", _toy(fail))


def _cfg(run_dir, beam=10) -> PipelineConfig:
    cfg = PipelineConfig()
    cfg.run_dir = str(run_dir)
    cfg.eval.beam_width = beam
    return cfg


def test_pipeline_refuses_while_another_run_holds_the_folder(tmp_path, toy_pipeline):
    run = tmp_path / "run"
    with RunLock(str(run), **FAST):
        with pytest.raises(RunnerError, match=f"in use by host .* pid {os.getpid()}"):
            run_pipeline(_cfg(run))
        assert not (run / CONFIG_FILE).exists() and not (run / "a").exists()
    assert run_pipeline(_cfg(run))["b"]["status"] == "ran"
    assert not (run / ".raygen_lock.json").exists()


def test_failed_run_leaves_config_and_stages_of_the_finished_run(tmp_path, toy_pipeline):
    run = tmp_path / "run"
    run_pipeline(_cfg(run, beam=10))
    good = (run / CONFIG_FILE).read_text()
    assert good.startswith(CONFIG_HEADER) and "beam_width: 10" in good
    toy_pipeline(fail=True)
    with pytest.raises(MemoryError):
        run_pipeline(_cfg(run, beam=20))
    assert (run / CONFIG_FILE).read_text() == good  # what the finished run serves is unchanged
    assert (run / "b" / "b.txt").exists() and (run / ".b.tmp" / "half.txt").exists()  # crash leftover
    assert not (run / ".raygen_lock.json").exists()  # released on the exception
    mine = run / ".a.tmp"  # named like a leftover but not raygen's: kept
    mine.mkdir()
    (mine / "notes").write_text("mine")
    toy_pipeline(fail=False)
    assert run_pipeline(_cfg(run, beam=10), only=["a"])["a"]["status"] == "skipped"
    assert not (run / ".b.tmp").exists() and (mine / "notes").read_text() == "mine"
    assert (run / CONFIG_FILE).read_text() == good  # nothing committed: not rewritten


def test_users_own_config_yaml_is_never_overwritten(tmp_path, toy_pipeline):
    run = tmp_path / "mine"
    run.mkdir()
    (run / CONFIG_FILE).write_text("my: settings\n")
    with pytest.raises(RunnerError, match="config.yaml exists and was not written by raygen"):
        run_pipeline(_cfg(run))
    assert (run / CONFIG_FILE).read_text() == "my: settings\n" and not (run / "a").exists()


@pytest.mark.parametrize("where", ["/", "/etc", "/usr", "/usr/lib/raygen-run", "/proc/x", "HOME", "/tmp"])
def test_system_folders_refused(where):
    where = str(Path.home()) if where == "HOME" else where
    with pytest.raises(RunnerError, match="system folder"):
        check_run_dir(where)


def test_os_errors_on_the_run_folder_are_one_line(tmp_path, toy_pipeline):
    (tmp_path / "file").write_text("x")
    for bad, why in [(tmp_path / "file" / "run", "Not a directory"), (tmp_path / "file", "not a folder")]:
        with pytest.raises(RunnerError, match=why) as e:
            run_pipeline(_cfg(bad))
        assert "\n" not in str(e.value)
    link = tmp_path / "etc-link"
    link.symlink_to("/etc")
    with pytest.raises(RunnerError, match="system folder"):
        check_run_dir(link)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_run_folder_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(RunnerError, match="Permission denied"):
            check_run_dir(ro / "run")
    finally:
        ro.chmod(0o700)
