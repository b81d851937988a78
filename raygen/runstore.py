"""A run folder on object storage (``run_dir=s3://bucket/run``): the local working mirror and the commit.

Object stores have no rename, so a stage commits in steps that leave nothing a reader trusts half-done:

1. the finished stage (run into ``<mirror>/.<stage>.tmp`` on the driver) is uploaded to
   ``<run>/.<stage>.tmp/`` without its ``_SUCCESS``;
2. the stage it replaces (only one raygen wrote) first loses its ``_SUCCESS``, then its objects;
3. the temporary prefix is copied (server-side) to ``<run>/<stage>/``;
4. ``<run>/<stage>/_SUCCESS`` (with the stage key) is written LAST;
5. the temporary prefix is deleted.

Readers (the runner, ``ctx.input``, ``raygen recommend``) trust only a stage folder whose ``_SUCCESS``
holds the key they expect, so a crash at any step leaves either the old finished stage, no finished
stage, or the new one. Leftover ``.<stage>.tmp/`` prefixes are deleted by the next run holding the run
lock. Only prefixes holding raygen's stage marker are ever deleted (the same rule as on local disk).

The driver works in a local mirror (``$RAYGEN_CACHE/runs/<sha1(run)>``): stages write there, and the
finished upstream stages a stage reads are pulled into it on demand (:func:`pull`).
"""
from __future__ import annotations

import hashlib
import os
import json
import logging
import shutil
from pathlib import Path

from raygen import storage

log = logging.getLogger("raygen")


def _names():
    from raygen.runner import STAGE_MARKER, SUCCESS, RunnerError

    return STAGE_MARKER, SUCCESS, RunnerError


def mirror_of(location: str) -> Path:
    """The driver's local working mirror of the run at ``location``."""
    from raygen.models import cache_dir

    return cache_dir() / "runs" / hashlib.sha1(str(location).encode()).hexdigest()[:20]


def _key_of(data: bytes) -> str | None:
    try:
        marker = json.loads(data)
    except ValueError:
        return None
    key = marker.get("key") if isinstance(marker, dict) else None
    return key if isinstance(key, str) else None


def done_key(location: str, name: str) -> str | None:
    """The key in ``<location>/<name>/_SUCCESS``; None when it is missing or damaged."""
    _, success, _ = _names()
    try:
        return _key_of(storage.read_bytes(storage.join(location, name, success)))
    except FileNotFoundError:
        return None


def written_by_raygen(location: str, name: str) -> bool:
    """Whether the prefix ``<location>/<name>`` holds raygen's stage marker or a valid ``_SUCCESS``."""
    marker, _, _ = _names()
    return storage.is_file(storage.join(location, name, marker)) or done_key(location, name) is not None


def check_replaceable(location: str, name: str) -> None:
    """RunnerError unless ``<location>/<name>`` is absent or a stage folder raygen wrote."""
    marker, success, RunnerError = _names()
    where = storage.join(location, name)
    if storage.exists(where) and not written_by_raygen(location, name):
        raise RunnerError(f"{where} holds objects that were not written by raygen (no {marker} or valid "
                          f"{success} under it); raygen never deletes them: move them away or choose another "
                          "run_dir")


def _remove_own(location: str) -> None:
    """Delete the temporary prefix ``location`` if raygen wrote it (holds the stage marker)."""
    marker, _, RunnerError = _names()
    if not storage.exists(location):
        return
    if not storage.is_file(storage.join(location, marker)):
        raise RunnerError(f"{location} holds objects that were not written by raygen (no {marker}); raygen never "
                          "deletes them: move them away")
    storage.delete_folder(location)


def commit(location: str, name: str, local_dir: Path, key: str) -> None:
    """Publish the finished local stage folder ``local_dir`` (holding ``_SUCCESS`` with ``key``) as
    ``<location>/<name>`` by the protocol of the module docstring."""
    _, success, _ = _names()
    tmp, final = storage.join(location, f".{name}.tmp"), storage.join(location, name)
    check_replaceable(location, name)
    _remove_own(tmp)
    n = storage.upload_folder(local_dir, tmp, exclude=(success,))
    if storage.exists(final):
        storage.delete_file(storage.join(final, success))  # readers stop trusting it before anything changes
        storage.delete_folder(final)
    storage.copy_folder(tmp, final)
    storage.write_bytes(storage.join(final, success), (Path(local_dir) / success).read_bytes())
    storage.delete_folder(tmp)
    log.info("stage %-8s committed to %s (%d files, key %s)", name, final, n + 1, key)


def clean_leftovers(location: str, names: list[str]) -> list[str]:
    """Delete the ``.<stage>.tmp`` prefixes a crashed run left (raygen's only); returns those deleted."""
    marker, _, _ = _names()
    gone = []
    for name in names:
        tmp = storage.join(location, f".{name}.tmp")
        if storage.is_file(storage.join(tmp, marker)):
            storage.delete_folder(tmp)
            gone.append(tmp)
        elif storage.exists(tmp):
            log.warning("%s was not written by raygen (no %s): left alone", tmp, marker)
    return gone


def local_key(folder: Path) -> str | None:
    _, success, _ = _names()
    try:
        return _key_of((Path(folder) / success).read_bytes())
    except OSError:
        return None


def pull(location: str, name: str, key: str | None, mirror: Path) -> Path:
    """``<mirror>/<name>`` holding the finished stage ``<location>/<name>`` (with ``key`` when given),
    downloaded when the mirror's copy is missing or has another key. FileNotFoundError when the stage
    is not finished (with that key) at ``location``."""
    remote = done_key(location, name)
    if remote is None or (key is not None and remote != key):
        found = f"its key there is {remote}" if remote else "it has no _SUCCESS there"
        raise FileNotFoundError(f"stage {name!r} has not finished in {location} with key {key} ({found})")
    local = Path(mirror) / name
    if local_key(local) == remote:
        return local
    part = Path(mirror) / f".{name}.pull"
    shutil.rmtree(part, ignore_errors=True)
    storage.download_folder(storage.join(location, name), part)
    if local_key(part) != remote:  # replaced while we copied: a reader never keeps a mixed copy
        shutil.rmtree(part, ignore_errors=True)
        raise FileNotFoundError(f"stage {name!r} in {location} changed while it was downloaded; run again")
    if local.is_symlink() or local.is_file():
        local.unlink()
    elif local.exists():
        shutil.rmtree(local)
    part.rename(local)
    log.info("stage %-8s pulled from %s into %s", name, location, local)
    return local


# ------------------------------------------------------------------------ reading a finished URI run

SERVING_STAGES = ("data", "corpus", "sids", "rl", "eval")
"""What ``raygen recommend`` / ``add-items`` read of a run (plus the stage whose model rl hands on)."""


def _fingerprint(location: str) -> str:
    """Changes whenever the run's config.yaml, a stage's ``_SUCCESS`` or its additions change."""
    from raygen.pipeline import CONFIG_FILE, stage_names

    _, success, _ = _names()
    h = hashlib.sha1()
    for rel in (CONFIG_FILE, *(f"{s}/{success}" for s in stage_names())):
        try:
            h.update(rel.encode() + b"\0" + storage.read_bytes(storage.join(location, rel)) + b"\0")
        except FileNotFoundError:
            h.update(rel.encode() + b"\0-\0")
    fs, path = storage.filesystem(storage.join(location, "additions"))
    import pyarrow.fs as pafs

    for info in fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True)):
        h.update(f"{info.path}:{info.size}:{info.mtime_ns}".encode())
    return h.hexdigest()[:16]


def snapshot(location: str, stages: tuple[str, ...] = SERVING_STAGES) -> Path:
    """A read-only local copy of what serving reads of the finished run at ``location`` (config.yaml, the
    finished ``stages``, the stage holding the model rl hands on, ``additions/``), downloaded once per
    node and content version into ``$RAYGEN_CACHE/mirror/run-<sha1>-<fingerprint>``. A plain path is
    returned as is. Stages without a ``_SUCCESS`` are not copied (readers then report them missing)."""
    if not storage.is_uri(location):
        return Path(location)
    from raygen.pipeline import CONFIG_FILE

    which = hashlib.sha1(",".join(stages).encode()).hexdigest()[:8]
    final = storage.mirror_root() / f"run-{hashlib.sha1(location.encode()).hexdigest()[:16]}-{_fingerprint(location)}-{which}"
    if final.is_dir():
        return final
    tmp = final.parent / f".{final.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        try:
            (tmp / CONFIG_FILE).write_bytes(storage.read_bytes(storage.join(location, CONFIG_FILE)))
        except FileNotFoundError:
            pass
        todo = [s for s in stages if done_key(location, s) is not None]
        for s in todo:
            storage.download_folder(storage.join(location, s), tmp / s)
        ref = tmp / "rl" / "model_ref.json"
        if ref.exists():  # rl handed on an upstream model: fetch that stage too
            target = Path(json.loads(ref.read_text())["model_dir"])
            if not target.is_absolute() and target.parts and target.parts[0] not in todo:
                storage.download_folder(storage.join(location, target.parts[0]), tmp / target.parts[0])
        storage.download_folder(storage.join(location, "additions"), tmp / "additions")
        try:
            os.rename(tmp, final)
        except OSError:  # another process on this node finished first
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("run %s available read-only in %s", location, final)
    return final
