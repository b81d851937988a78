"""Stage graph with content hashing, skip-on-rerun and atomic stage folders.

A stage has a name, the upstream stages it follows (``deps``) and reads (``reads``), the config
sections it depends on, and a ``run(ctx)`` that writes into ``ctx.out``. Its *key* is a hash of those
config sections plus the keys of its upstream stages.

The contract is enforced: ``ctx.cfg`` is a view that answers only the declared sections (plus the
run-wide ``run_dir`` and ``ray``), and ``ctx.input`` hands out only declared stages; anything else
raises :class:`StageContractError`, so a stage cannot depend on a value its key does not cover. The runner skips a stage whose folder holds ``_SUCCESS``
with the same key; otherwise it runs the stage into ``<run_dir>/.<stage>.tmp`` and renames
that onto ``<run_dir>/<stage>`` only when ``run`` returned. That gives resume-after-crash,
caching between runs and Tune trials that share upstream stages.

``run_dir`` may also be a URI (``s3://bucket/run``): stages then run into a local working mirror and
commit by the object-store protocol of :mod:`raygen.runstore` (upload under ``.<stage>.tmp/``, copy,
``_SUCCESS`` last); ``ctx.input`` pulls finished upstream stages into the mirror on demand, and
``ctx.input_location`` / ``ctx.location`` name locations under the run for Ray workers.

Every stage folder raygen creates holds a ``.raygen_stage`` marker; the runner replaces only such
folders (or older ones with a valid ``_SUCCESS``) and refuses, before running anything, when a folder
named like a stage was not written by raygen, so nothing a user keeps in the run folder is deleted.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from raygen import runstore, storage
from raygen.io import read_json, write_json

log = logging.getLogger("raygen")

SUCCESS = "_SUCCESS"
STAGE_MARKER = ".raygen_stage"
"""Written into every stage folder when raygen creates it: the runner only ever deletes folders holding
it (or, for folders written before the marker existed, a valid ``_SUCCESS``)."""


class RunnerError(RuntimeError):
    """The run folder holds something the runner must not touch; the message says what and where."""


class StageContractError(RuntimeError):
    """A stage read a config section or a stage folder it does not declare (a bug in the stage)."""


@dataclass
class Stage:
    name: str
    run: Callable[["StageContext"], dict | None]
    deps: tuple[str, ...] = ()
    sections: tuple[str, ...] = ()
    """Config sections (attributes of the pipeline config) whose values enter the hash: the only
    sections ``ctx.cfg`` answers."""
    reads: tuple[str, ...] = ()
    """Earlier stages whose folders ``run`` reads besides ``deps`` (each must be an ancestor, so its
    key is part of this stage's key): ``ctx.input`` answers ``deps`` and ``reads`` only."""


RUN_WIDE = ("run_dir", "ray")
"""Config attributes every stage may read: where the run lives and how to reach Ray (neither changes
what a stage computes)."""


class ConfigView:
    """A stage's read-only view of the pipeline config: its declared sections and :data:`RUN_WIDE`."""

    def __init__(self, cfg: Any, stage: str, sections: tuple[str, ...]):
        object.__setattr__(self, "_cfg", cfg)
        object.__setattr__(self, "_stage", stage)
        object.__setattr__(self, "_allowed", frozenset(sections) | frozenset(RUN_WIDE))

    def __getattr__(self, name: str) -> Any:
        if name in self._allowed:
            return getattr(self._cfg, name)
        if name.startswith("__"):
            raise AttributeError(name)
        raise StageContractError(f"stage {self._stage!r} read cfg.{name}, which is not among its declared sections "
                                 f"{sorted(self._allowed - set(RUN_WIDE))}: declare it in raygen/pipeline.py "
                                 "(it then enters the stage's cache key)")

    def __setattr__(self, name: str, value: Any) -> None:
        raise StageContractError(f"stage {self._stage!r} tried to set cfg.{name}: a stage's config is read-only")


@dataclass
class StageContext:
    cfg: Any
    run_dir: Path
    out: Path
    stage: str
    key: str = ""
    """This stage's cache key (e.g. to name resumable training runs)."""
    metrics: dict = field(default_factory=dict)
    stop_step: int = 0
    """> 0: end a training stage after this optimizer step (one ASHA rung of a sweep); the stage then
    sets ``partial`` unless it reached its own end, and the runner leaves its folder unfinished."""
    partial: bool = False
    readable: tuple[str, ...] | None = None
    """Stages ``input`` may hand out (the runner sets the declared deps + reads; None = any, for tests
    that call a stage function directly)."""

    remote: str = ""
    """The run's URI when ``run_dir`` is one (``run_dir`` is then its local working mirror); else empty."""
    keys: dict = field(default_factory=dict)
    """Every stage's cache key (the runner sets it): what ``input`` expects in an upstream ``_SUCCESS``."""

    def _check_readable(self, stage: str) -> None:
        if self.readable is not None and stage not in self.readable:
            raise StageContractError(f"stage {self.stage!r} read stage {stage!r}, which it does not declare "
                                     f"(deps + reads: {list(self.readable)}); declare it in raygen/pipeline.py")

    def input(self, stage: str) -> Path:
        """Local folder of a finished upstream stage this stage declares (pulled into the mirror from a URI run)."""
        self._check_readable(stage)
        if self.remote:
            return runstore.pull(self.remote, stage, self.keys.get(stage), self.run_dir)
        p = self.run_dir / stage
        if not (p / SUCCESS).exists():
            raise FileNotFoundError(f"stage {self.stage!r} needs stage {stage!r}, which has not finished in {self.run_dir}")
        return p

    def input_location(self, stage: str) -> str:
        """Where the finished upstream ``stage`` lives, for Ray workers (they call
        :func:`raygen.storage.materialize` on it): its URI in a URI run, else its absolute local path."""
        self._check_readable(stage)
        if self.remote:
            key, done = self.keys.get(stage), runstore.done_key(self.remote, stage)
            if done is None or (key is not None and done != key):
                raise FileNotFoundError(f"stage {self.stage!r} needs stage {stage!r}, which has not finished in "
                                        f"{self.remote} (key {key})")
            return storage.join(self.remote, stage)
        return str(self.input(stage).resolve())

    def location(self, *parts: str) -> str:
        """A location under the run (its URI, or the absolute local run folder), e.g. Ray Train's
        ``storage_path`` ``ctx.location("ray_train")``."""
        return storage.join(self.remote or str(Path(self.run_dir).resolve()), *parts)


def _section_dict(cfg: Any, name: str) -> Any:
    """A config section as it enters the cache key: its fields, less the *key-neutral* ones at their default.

    A section class may list fields in ``KEY_NEUTRAL`` (fields added after runs and pinned builds were keyed,
    e.g. ``data.table``): at their default value they are left out, so adding such a field keeps every existing
    key (and every kept run and pin) valid; once set, they enter the key like any other field."""
    obj = getattr(cfg, name)
    if not dataclasses.is_dataclass(obj):
        return obj
    out = dataclasses.asdict(obj)
    neutral = getattr(type(obj), "KEY_NEUTRAL", ())
    if neutral:
        default = type(obj)()
        for f in neutral:
            if getattr(obj, f) == getattr(default, f):
                out.pop(f, None)
    return out


def stage_key(cfg: Any, stage: Stage, dep_keys: dict[str, str]) -> str:
    payload = {
        "stage": stage.name,
        "sections": {s: _section_dict(cfg, s) for s in stage.sections},
        "deps": {d: dep_keys[d] for d in stage.deps},
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def success_key(stage_dir: Path) -> str | None:
    """The key in ``stage_dir/_SUCCESS``; None when it is missing or not what raygen writes
    (a JSON object with a string ``key``): a damaged marker never crashes the runner."""
    try:
        marker = read_json(Path(stage_dir) / SUCCESS)
    except (ValueError, OSError):  # missing, unreadable, not UTF-8 or not JSON
        return None
    key = marker.get("key") if isinstance(marker, dict) else None
    return key if isinstance(key, str) else None


def stage_keys(cfg: Any, stages: list[Stage]) -> dict[str, str]:
    """Every stage's cache key, in order (a stage's deps and reads must come earlier and be ancestors)."""
    keys: dict[str, str] = {}
    ancestors: dict[str, set[str]] = {}
    for st in stages:
        for d in st.deps:
            if d not in keys:
                raise ValueError(f"stage {st.name!r} depends on {d!r}, which is not earlier in the stage list")
        ancestors[st.name] = set(st.deps).union(*(ancestors[d] for d in st.deps))
        stray = [r for r in st.reads if r not in ancestors[st.name]]
        if stray:
            raise ValueError(f"stage {st.name!r} reads {stray}, which are not upstream of it (their keys would "
                             "not enter its key)")
        keys[st.name] = stage_key(cfg, st, keys)
    return keys


def link_finished(cfg: Any, stages: list[Stage], run_dir: Path, source: Callable[[str, str], Path | None]) -> list[str]:
    """Reuse finished stage folders from elsewhere: for each stage of ``stages``, ``source(name, key)``
    names a folder that may hold it; when that folder is finished with this config's key and
    ``run_dir/<name>`` does not exist yet, link it there (a relative link). Returns the names linked.
    Nothing in ``run_dir`` is replaced (the runner decides what reruns)."""
    import os

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    linked = []
    for name, key in stage_keys(cfg, stages).items():
        src, dst = source(name, key), run_dir / name
        if src is None or dst.exists() or dst.is_symlink() or success_key(src) != key:
            continue
        os.symlink(os.path.relpath(Path(src).resolve(), run_dir.resolve()), dst, target_is_directory=True)
        linked.append(name)
    return linked


def stage_done(run_dir: Path, name: str, key: str) -> bool:
    return success_key(Path(run_dir) / name) == key


def written_by_raygen(stage_dir: Path) -> bool:
    """Whether ``stage_dir`` is a folder raygen created: it holds :data:`STAGE_MARKER`, or (a folder
    written before the marker existed) a valid ``_SUCCESS``."""
    stage_dir = Path(stage_dir)
    if stage_dir.is_symlink() or not stage_dir.is_dir():
        return False
    return (stage_dir / STAGE_MARKER).is_file() or success_key(stage_dir) is not None


def check_replaceable(run_dir: Path, name: str) -> None:
    """RunnerError unless ``<run_dir>/<name>`` is absent or a folder raygen created (which it may replace)."""
    final = Path(run_dir) / name
    if (final.exists() or final.is_symlink()) and not written_by_raygen(final):
        what = "a link" if final.is_symlink() else "a folder" if final.is_dir() else "a file"
        raise RunnerError(f"{final} is {what} that was not written by raygen (no {STAGE_MARKER} or valid {SUCCESS} "
                          f"in it); raygen never deletes it: move it away or choose another run_dir")


def _remove_own(path: Path) -> None:
    """Delete a temporary or superseded stage folder of raygen's (``.<stage>.tmp`` / ``.<stage>.old``)."""
    if path.is_symlink() or path.is_file() or (path.exists() and not written_by_raygen(path)):
        raise RunnerError(f"{path} is not a folder raygen created (no {STAGE_MARKER}); raygen never deletes it: "
                          "move it away")
    if path.exists():
        shutil.rmtree(path)


def clean_leftovers(run_dir: str | Path, names: list[str]) -> list[str]:
    """Delete the crash leftovers ``.<stage>.tmp`` / ``.<stage>.old`` of ``names`` that raygen wrote (they
    hold :data:`STAGE_MARKER`; anything else is left alone): call it only while holding the run lock."""
    if storage.is_uri(run_dir):
        return runstore.clean_leftovers(str(run_dir), names)
    gone = []
    for name in names:
        for leftover in (Path(run_dir) / f".{name}.tmp", Path(run_dir) / f".{name}.old"):
            if leftover.is_dir() and not leftover.is_symlink() and (leftover / STAGE_MARKER).is_file():
                shutil.rmtree(leftover)
                gone.append(str(leftover))
    if gone:
        log.info("removed crash leftovers %s", gone)
    return gone


def _commit_local(run_dir: Path, name: str, tmp: Path) -> None:
    final = run_dir / name
    check_replaceable(run_dir, name)
    if final.exists():
        trash = run_dir / f".{name}.old"
        _remove_own(trash)
        final.rename(trash)
        tmp.rename(final)
        shutil.rmtree(trash)
    else:
        tmp.rename(final)


def run_stages(cfg: Any, stages: list[Stage], run_dir: str | Path, only: list[str] | None = None,
               force: list[str] | None = None, stop_at: dict[str, int] | None = None,
               on_commit: Callable[[str], None] | None = None, lock: Any = None) -> dict[str, dict]:
    """Run ``stages`` in order (deps must come first). Returns {stage: metrics-or-status}.

    ``run_dir`` is a local folder or a URI (then the stages run in a local mirror and commit by the
    object-store protocol of :mod:`raygen.runstore`). ``on_commit(stage)`` runs right after each stage
    commits (the pipeline writes the run's config.yaml there); ``lock`` (a held
    :class:`raygen.runlock.RunLock`) is checked before each commit, so a run that lost its lease never
    commits.

    ``stop_at={stage: step}`` runs that (training) stage only up to ``step``: when it stops before its
    own end its output stays in ``<run_dir>/.<stage>.tmp`` with metrics.json but no ``_SUCCESS``
    (status ``partial``, ``out`` = that folder) and no later stage runs; calling again with a larger
    step resumes it (its training run is resumable), and a call without ``stop_at`` finishes it."""
    remote = str(run_dir) if storage.is_uri(run_dir) else ""
    run_dir = runstore.mirror_of(remote) if remote else Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    keys = stage_keys(cfg, stages)
    summary: dict[str, dict] = {}
    force = set(force or [])
    done_key = (lambda name: runstore.done_key(remote, name)) if remote else (lambda name: success_key(run_dir / name))
    todo: list[tuple[Stage, str, bool]] = []  # (stage, key, runs)
    for st in stages:
        key = keys[st.name]
        if only is not None and st.name not in only:
            continue
        todo.append((st, key, st.name in force or done_key(st.name) != key))
    for st, _, runs in todo:  # refuse before any stage runs, not after hours of training
        if runs:
            runstore.check_replaceable(remote, st.name) if remote else check_replaceable(run_dir, st.name)
    for st, key, runs in todo:
        if not runs:
            log.info("stage %-8s up to date (key %s), skipped", st.name, key)
            summary[st.name] = {"status": "skipped", "key": key}
            continue
        tmp = run_dir / f".{st.name}.tmp"
        _remove_own(tmp)
        tmp.mkdir(parents=True)
        (tmp / STAGE_MARKER).write_text(f"{st.name} folder created by raygen; raygen may replace it\n")
        ctx = StageContext(cfg=ConfigView(cfg, st.name, st.sections), run_dir=run_dir, out=tmp, stage=st.name,
                           key=key, readable=tuple(dict.fromkeys((*st.deps, *st.reads))),
                           stop_step=(stop_at or {}).get(st.name, 0), remote=remote, keys=keys)
        log.info("stage %-8s running (key %s)", st.name, key)
        t0 = time.time()
        metrics = st.run(ctx) or {}
        metrics = {**ctx.metrics, **metrics, "seconds": round(time.time() - t0, 3)}
        write_json(tmp / "metrics.json", metrics)
        if ctx.partial:
            log.info("stage %-8s stopped at step %d, unfinished in %s", st.name, ctx.stop_step, tmp)
            summary[st.name] = {"status": "partial", "key": key, "out": str(tmp), "metrics": metrics}
            break
        write_json(tmp / SUCCESS, {"key": key, "finished": time.time()})
        if lock is not None:
            lock.check()
        if remote:
            runstore.commit(remote, st.name, tmp, key)
        _commit_local(run_dir, st.name, tmp)
        if on_commit is not None:
            on_commit(st.name)
        log.info("stage %-8s done in %.1fs", st.name, metrics["seconds"])
        summary[st.name] = {"status": "ran", "key": key, "metrics": metrics}
    return summary
