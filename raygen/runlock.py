"""One writer per run folder: a lease ``<run>/.raygen_lock.json`` with an owner token and a heartbeat.

    with RunLock("s3://bucket/run", wait_s=0):   # RunnerError when another live run holds it
        ...

The lease is a small JSON file (or object) ``{"token", "host", "pid", "started", "heartbeat"}``; a daemon
thread rewrites its heartbeat every ``heartbeat_s`` seconds while the lock is held and the lease is
deleted on release (also when the block raises). A lease is *stale*, and is taken over, when its
heartbeat is older than ``ttl_s`` (a crashed or partitioned owner) or when it was written on this host by
a process that no longer exists.

Guarantees, honestly stated:

- **Local folder or shared POSIX mount** (NFS v3+, Lustre, CephFS, EFS): the lease is created with
  ``O_CREAT | O_EXCL``, which is atomic there, so of two runs starting at once exactly one gets it.
  A stale lease is first renamed to a unique name (one taker wins the rename) and then deleted.
- **Object store** (S3, GCS; no create-if-absent through pyarrow): the run writes its lease, waits
  ``settle_s`` and reads it back; it holds the lock only if its own token is still there (last writer
  wins, the loser sees the winner's token). Two runs can both believe they hold it only if one reads
  "no lease" and writes more than ``settle_s`` later than the other's whole write-wait-read: a process
  paused for seconds between two calls. Every heartbeat re-reads the lease, and :meth:`RunLock.check`
  (called by the runner before each commit) raises once another owner's token is found, so a run that
  lost the lease never commits a stage.
- Clocks: staleness compares the lease's wall-clock heartbeat with this host's clock; keep ``ttl_s``
  well above the clock skew between hosts (the default is 120 s with a heartbeat every 15 s).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from raygen import storage

log = logging.getLogger("raygen")

LOCK_FILE = ".raygen_lock.json"


class LockBusy(RuntimeError):
    """Raised inside :meth:`RunLock._try_acquire` when a live owner holds the lease."""


def _runner_error(msg: str) -> Exception:
    from raygen.runner import RunnerError

    return RunnerError(msg)


@dataclass
class Lease:
    token: str
    host: str
    pid: int
    started: float
    heartbeat: float

    @classmethod
    def parse(cls, data: bytes) -> "Lease | None":
        """The lease in ``data``; None when it is not one raygen wrote (damaged: treated as stale)."""
        try:
            d = json.loads(data)
            return cls(str(d["token"]), str(d["host"]), int(d["pid"]), float(d["started"]), float(d["heartbeat"]))
        except (ValueError, KeyError, TypeError):
            return None

    def dump(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()

    def describe(self, now: float) -> str:
        return (f"host {self.host} pid {self.pid} (started {now - self.started:.0f} s ago, "
                f"last heartbeat {now - self.heartbeat:.0f} s ago)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


class RunLock:
    """The lease on run folder ``location`` (a path or a URI). ``wait_s`` > 0: wait up to that long for a
    live owner to finish (polling every ``poll_s``) instead of refusing at once."""

    def __init__(self, location: str, wait_s: float = 0.0, ttl_s: float = 120.0, heartbeat_s: float = 15.0,
                 settle_s: float = 1.0, poll_s: float = 2.0):
        self.location = str(location)
        self.path = storage.join(self.location, LOCK_FILE)
        self.local = storage.local_path(self.path)
        self.wait_s, self.ttl_s, self.heartbeat_s = float(wait_s), float(ttl_s), float(heartbeat_s)
        self.settle_s, self.poll_s = float(settle_s), float(poll_s)
        self.token = uuid.uuid4().hex
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held = False

    # ------------------------------------------------------------------------ public
    def acquire(self) -> "RunLock":
        deadline = time.time() + self.wait_s
        while True:
            try:
                self._try_acquire()
                break
            except LockBusy as busy:
                if time.time() >= deadline:
                    hint = (f"waited {self.wait_s:.0f} s; " if self.wait_s > 0 else "") + \
                        "wait for it to finish (or pass --wait-lock SECONDS)"
                    raise _runner_error(f"run folder {self.location} is in use by {busy}; {hint}") from None
                time.sleep(min(self.poll_s, max(0.05, deadline - time.time())))
        self._held = True
        self._thread = threading.Thread(target=self._beat, name="raygen-run-lock", daemon=True)
        self._thread.start()
        log.info("run lock %s held (token %s)", self.path, self.token[:8])
        return self

    def check(self) -> None:
        """RunnerError when the lease is no longer this run's (taken over as stale, or overwritten)."""
        if not self._held:
            raise _runner_error(f"run lock {self.path} is not held")
        lease = self._read()
        if lease is None or lease.token != self.token:
            self.lost = self.lost or ("taken over by " + lease.describe(time.time()) if lease else "deleted")
        if self.lost:
            raise _runner_error(f"run lock {self.path} was lost ({self.lost}); nothing more is committed")

    def release(self) -> None:
        if not self._held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.heartbeat_s + 5)
        self._held = False
        try:
            lease = self._read()
            if lease is not None and lease.token == self.token:
                self._delete()
        except OSError as e:  # the storage went away: the lease goes stale after ttl_s
            log.warning("could not release run lock %s: %s", self.path, e)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # ----------------------------------------------------------------------- internals
    def _lease(self, started: float | None = None) -> Lease:
        now = time.time()
        return Lease(self.token, socket.gethostname(), os.getpid(), started or now, now)

    def _read(self) -> Lease | None:
        """The current lease; None when there is none. A damaged lease reads as an expired one."""
        try:
            data = storage.read_bytes(self.path)
        except FileNotFoundError:
            return None
        return Lease.parse(data) or Lease("?", "?", -1, 0.0, 0.0)

    def _stale(self, lease: Lease) -> bool:
        if time.time() - lease.heartbeat > self.ttl_s:
            return True
        return lease.host == socket.gethostname() and lease.pid != os.getpid() and not _pid_alive(lease.pid)

    def _delete(self) -> None:
        storage.delete_file(self.path)

    def _try_acquire(self) -> None:
        current = self._read()
        if current is not None:
            if not self._stale(current):
                raise LockBusy(current.describe(time.time()))
            log.warning("run lock %s: taking over the stale lease of %s", self.path, current.describe(time.time()))
            self._break(current)
        if self.local is not None:
            self._create_local()
        else:
            self._create_object()

    def _break(self, stale: Lease) -> None:
        if self.local is None:
            self._delete()  # object store: the write-then-verify below settles a race between two takers
            return
        aside = self.local.with_name(f"{LOCK_FILE}.stale-{self.token}")
        try:
            os.rename(self.local, aside)  # one taker wins; the other finds no file and creates (or loses) below
        except FileNotFoundError:
            return
        moved = Lease.parse(aside.read_bytes())
        if moved is not None and moved.token != stale.token and not self._stale(moved):
            os.replace(aside, self.local)  # a new owner got in between our read and rename: put it back
            raise LockBusy(moved.describe(time.time()))
        aside.unlink()

    def _create_local(self) -> None:
        self.local.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.local, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            lease = self._read()
            raise LockBusy(lease.describe(time.time()) if lease else "another run") from None
        with os.fdopen(fd, "wb") as f:
            f.write(self._lease().dump())
            f.flush()
            os.fsync(f.fileno())

    def _create_object(self) -> None:
        storage.write_bytes(self.path, self._lease().dump())
        time.sleep(self.settle_s)
        lease = self._read()
        if lease is None or lease.token != self.token:
            raise LockBusy(lease.describe(time.time()) if lease else "another run (its lease vanished)")

    def _beat(self) -> None:
        started = time.time()
        while not self._stop.wait(self.heartbeat_s):
            try:
                lease = self._read()
                if lease is None or lease.token != self.token:
                    self.lost = ("taken over by " + lease.describe(time.time())) if lease else "deleted"
                    log.error("run lock %s lost: %s", self.path, self.lost)
                    return
                storage.write_bytes(self.path, self._lease(started=lease.started or started).dump())
            except OSError as e:  # a storage hiccup: try again at the next beat (stale only after ttl_s)
                log.warning("run lock %s heartbeat failed: %s", self.path, e)
