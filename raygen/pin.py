"""Pinned stage outputs: keep finished stage folders (e.g. ``corpus`` + ``sids``) and reuse them elsewhere.

Why: a SID build is not reproducible across machines. RQ-VAE and k-means training amplify the float
rounding that differs between CPU kernels (AVX2 vs AVX512) and GPUs: the Industrial build of
``configs/industrial.yaml`` gave 17.4 % collisions before dedup on one machine kind and 16.8 % (other
codes) on another. A model is only comparable with models trained on the same SIDs, and must be served
with the SIDs it was trained on, so a multi-session benchmark or a production run pins its build.

A pin is a folder holding copies of finished stage folders (each with its ``_SUCCESS`` key) and
``pin.json``: the stages' keys, a content digest of every upstream stage the pin was built from (the
``data`` stage for ``corpus`` + ``sids``), a SHA-256 of every pinned file, the machine and the time.
:func:`use_pin` copies the pinned folders into a run whose upstream stages are done, after checking that
this run's config gives the same stage keys, that its upstream tables have the same content and that
the pinned files are intact; the runner then skips the pinned stages (their keys match). Pure Python
+ pyarrow, no Ray.

Locations: a pin may be read from a URI (``--pin s3://bucket/pins/x``: materialized read-only into the
node's cache), a pin may be saved from a URI run, and a URI run receives pinned stages through the
run's commit protocol (:mod:`raygen.runstore`) while holding its run lock.
"""
from __future__ import annotations

import hashlib
import json
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from raygen import runstore, storage
from raygen.io import read_json, write_json
from raygen.runner import STAGE_MARKER, check_replaceable, stage_done, stage_keys

PIN_FILE = "pin.json"


class PinError(RuntimeError):
    """A pin that does not fit this run (other config, other upstream data, damaged files)."""


def hash_table(h, table) -> None:
    """Feed a pyarrow table's content (column names, values) to the hash ``h``: equal for equal tables whatever
    the pyarrow version or compression wrote the bytes (also the benchmarks' kept-run data digest)."""
    for name in table.column_names:
        h.update(name.encode())
        h.update(json.dumps(table.column(name).to_pylist(), default=str).encode())


def table_digest(folder: str | Path) -> str:
    """SHA-256 of the content (file names, then :func:`hash_table`) of every ``*.parquet`` in ``folder``."""
    import pyarrow.parquet as pq

    h = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.parquet")):
        h.update(path.name.encode())
        hash_table(h, pq.read_table(path))
    return h.hexdigest()


def _file_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _upstream(stages_all: list, pinned: list[str]) -> list[str]:
    """The stages the pinned ones are built from and that are not pinned themselves, in order."""
    by_name = {s.name: s for s in stages_all}
    need: set[str] = set()
    todo = list(pinned)
    while todo:
        for d in by_name[todo.pop()].deps:
            if d not in need:
                need.add(d)
                todo.append(d)
    return [s.name for s in stages_all if s.name in need and s.name not in pinned]


def _downstream(stages_all: list, names: list[str]) -> list[str]:
    """The stages that depend on any of ``names``, directly or not, in order."""
    below: set[str] = set(names)
    for st in stages_all:  # deps come first in the stage list
        if set(st.deps) & below:
            below.add(st.name)
    return [s.name for s in stages_all if s.name in below and s.name not in names]


def save_pin(cfg: Any, run_dir: str | Path, pin_dir: str | Path, stages: list[str], note: str = "",
             stages_all: list | None = None) -> dict:
    """Copy the finished ``stages`` of ``run_dir`` into the new folder ``pin_dir`` with ``pin.json``.

    Every pinned stage must be finished with this config's key (a pin of something else would mislead)
    and ``pin_dir`` must not exist (a pin is never overwritten). Written atomically: a temporary folder
    renamed at the end. Returns the manifest."""
    from raygen.pipeline import STAGES

    stages_all = stages_all or STAGES
    keys = stage_keys(cfg, stages_all)
    unknown = [s for s in stages if s not in keys]
    if unknown:
        raise PinError(f"unknown stage(s) {unknown}; stages are {list(keys)}")
    if storage.is_uri(pin_dir):
        raise PinError(f"{pin_dir}: a pin is written to a local folder (upload it with any tool; runs read pins "
                       "from URIs)")
    if storage.is_uri(run_dir):  # the finished stages and their upstream, read-only from the bucket
        run_dir = runstore.snapshot(str(run_dir), stages=(*stages, *_upstream(stages_all, stages)))
    run_dir, pin_dir = Path(run_dir), Path(pin_dir)
    for s in stages:
        if not stage_done(run_dir, s, keys[s]):
            raise PinError(f"{run_dir / s} is not finished with this config (key {keys[s]}): run the stage first")
    if pin_dir.exists():
        raise PinError(f"{pin_dir} exists; a pin is never overwritten: choose a new folder")
    upstream = _upstream(stages_all, stages)
    tmp = pin_dir.with_name(f".{pin_dir.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)  # a pin cut short by an earlier call (this function's own temporary folder)
    tmp.mkdir(parents=True)
    for s in stages:
        shutil.copytree(run_dir / s, tmp / s, symlinks=False)
    manifest = {
        "stages": {s: keys[s] for s in stages},
        "upstream": {u: {"key": keys[u], "tables": table_digest(run_dir / u)} for u in upstream},
        "files": {s: _file_hashes(tmp / s) for s in stages},
        "made_on": {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "note": note,
    }
    write_json(tmp / PIN_FILE, manifest)
    tmp.rename(pin_dir)
    return manifest


def local_pin(pin_dir: str | Path) -> Path:
    """The pin as a local folder: a path as is; a URI materialized read-only (keyed by its pin.json)."""
    if not storage.is_uri(pin_dir):
        return Path(pin_dir)
    try:
        manifest = storage.read_bytes(storage.join(str(pin_dir), PIN_FILE))
    except OSError as e:
        raise PinError(f"{storage.join(str(pin_dir), PIN_FILE)}: not a readable pin manifest ({e})") from None
    return storage.materialize(str(pin_dir), key=hashlib.sha256(manifest).hexdigest()[:16])


def read_manifest(pin_dir: str | Path) -> dict:
    """``pin.json`` of ``pin_dir``; PinError naming the file when it is missing or not a pin manifest."""
    path = Path(pin_dir) / PIN_FILE
    try:
        manifest = read_json(path)
    except (OSError, ValueError) as e:
        raise PinError(f"{path}: not a readable pin manifest ({e})") from None
    if not isinstance(manifest, dict) or not all(isinstance(manifest.get(k), dict)
                                                 for k in ("stages", "upstream", "files")):
        raise PinError(f"{path}: not a pin manifest (needs the objects 'stages', 'upstream' and 'files')")
    return manifest


def install_pin(cfg: Any, pin_dir: str | Path) -> list[str]:
    """Run the pin's upstream stages into ``cfg.run_dir`` (skipped when done), then :func:`use_pin`: what
    ``raygen run --pin DIR`` does before running the stages asked for."""
    from raygen.pipeline import run_pipeline

    pin_dir = local_pin(pin_dir)
    upstream = list(read_manifest(pin_dir)["upstream"])
    if upstream:
        run_pipeline(cfg, only=upstream)
    if storage.is_uri(cfg.run_dir):
        return _use_pin_uri(cfg, str(cfg.run_dir), pin_dir)
    from raygen.runlock import RunLock

    with RunLock(str(cfg.run_dir)):  # no other run writes the folder while the pinned stages go in
        return use_pin(cfg, cfg.run_dir, pin_dir)


def _use_pin_uri(cfg: Any, location: str, pin_dir: Path) -> list[str]:
    """:func:`use_pin` into a URI run: holding its lock, on the driver's mirror (the upstream and pinned
    stages pulled into it), then each pinned stage the run does not already hold committed to the bucket."""
    from raygen.pipeline import STAGES
    from raygen.runlock import RunLock

    manifest, keys = read_manifest(pin_dir), stage_keys(cfg, STAGES)
    with RunLock(location) as lock:
        mirror = runstore.mirror_of(location)
        for s in [*manifest["upstream"], *manifest["stages"]]:
            try:
                runstore.pull(location, s, keys.get(s), mirror)
            except FileNotFoundError:  # use_pin names a missing upstream stage; a missing pinned one is copied
                pass
        before = {s: _file_hashes(mirror / s) if (mirror / s).is_dir() else None for s in manifest["stages"]}
        names = use_pin(cfg, mirror, pin_dir, present=lambda d: (mirror / d).exists()
                        or storage.exists(storage.join(location, d)))
        for s in names:
            if runstore.done_key(location, s) != keys[s] or _file_hashes(mirror / s) != before[s]:
                lock.check()
                runstore.commit(location, s, mirror / s, keys[s])
    return names


def use_pin(cfg: Any, run_dir: str | Path, pin_dir: str | Path, stages_all: list | None = None,
            present: Any = None) -> list[str]:
    """Copy the pinned stage folders of ``pin_dir`` into ``run_dir`` (replacing folders raygen wrote
    there, never anything else; a folder already equal to the pinned one is left as it is); returns the
    stage names. PinError, before anything is copied, when this config's key of a pinned stage differs, an
    upstream stage is not done in ``run_dir`` or its tables differ from the pin's, a pinned file is missing
    or changed, or ``run_dir`` holds a stage downstream of a pinned stage the pin would replace
    (``present(stage)`` says whether the run holds a stage; default: its folder exists in ``run_dir``)."""
    from raygen.pipeline import STAGES

    stages_all = stages_all or STAGES
    run_dir, pin_dir = Path(run_dir), Path(pin_dir)
    manifest = read_manifest(pin_dir)
    keys = stage_keys(cfg, stages_all)
    for s, key in manifest["stages"].items():
        if keys.get(s) != key:
            raise PinError(f"{pin_dir}: stage {s!r} was pinned with key {key}, this config gives {keys.get(s)} "
                           f"(a config section it depends on differs): rebuild, or use the pin's config")
    for u, want in manifest["upstream"].items():
        if not stage_done(run_dir, u, want["key"]):
            raise PinError(f"{run_dir / u} is not finished with key {want['key']}: run the {u!r} stage first")
        got = table_digest(run_dir / u)
        if got != want["tables"]:
            raise PinError(f"{run_dir / u}: its tables differ from those the pin was built from "
                           f"({got[:12]} vs {want['tables'][:12]}): the pin does not fit this data")
    for s, files in manifest["files"].items():
        have = _file_hashes(pin_dir / s) if (pin_dir / s).is_dir() else {}
        bad = sorted(f for f in files if have.get(f) != files[f]) + sorted(set(have) - set(files))
        if bad:
            raise PinError(f"{pin_dir / s}: files missing, changed or added since it was pinned: {bad[:5]}")
    for s in manifest["stages"]:
        check_replaceable(run_dir, s)
    # a stage folder that already holds the pinned files stays; replacing one that differs would leave every
    # finished stage downstream of it built on the replaced outputs (stage keys are config hashes, not content)
    changed = [s for s in manifest["stages"] if not (run_dir / s).is_dir()
               or {f: h for f, h in _file_hashes(run_dir / s).items() if f != STAGE_MARKER}
               != {f: h for f, h in manifest["files"][s].items() if f != STAGE_MARKER}]
    below = _downstream(stages_all, changed)
    present = present or (lambda d: (run_dir / d).exists())
    built = [d for d in below if d not in manifest["stages"] and present(d)]
    if built:
        raise PinError(f"{run_dir} has finished stages built on the outputs the pin would replace "
                       f"({', '.join(built)} after {', '.join(changed)}): use a new run_dir, or move them away")
    for s in changed:
        tmp, final, old = run_dir / f".{s}.pin.tmp", run_dir / s, run_dir / f".{s}.pin.old"
        for own in (tmp, old):  # this function's own leftovers
            if own.exists():
                shutil.rmtree(own)
        shutil.copytree(pin_dir / s, tmp)
        if not (tmp / STAGE_MARKER).exists():
            (tmp / STAGE_MARKER).write_text(f"{s} folder created by raygen (from pin {pin_dir}); raygen may replace it\n")
        if final.exists():
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old)
        else:
            tmp.rename(final)
    return list(manifest["stages"])
