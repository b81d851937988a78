"""Stage graph with content hashing, skip-on-rerun and atomic stage folders.

A stage has a name, the upstream stages it reads, the config sections it depends on, and a
``run(ctx)`` that writes into ``ctx.out``. Its *key* is a hash of those config sections plus
the keys of its upstream stages. The runner skips a stage whose folder holds ``_SUCCESS``
with the same key; otherwise it runs the stage into ``<run_dir>/.<stage>.tmp`` and renames
that onto ``<run_dir>/<stage>`` only when ``run`` returned. That gives resume-after-crash,
caching between runs and Tune trials that share upstream stages.
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

from raygen.io import read_json, write_json

log = logging.getLogger("raygen")

SUCCESS = "_SUCCESS"


@dataclass
class Stage:
    name: str
    run: Callable[["StageContext"], dict | None]
    deps: tuple[str, ...] = ()
    sections: tuple[str, ...] = ()
    """Config sections (attributes of the pipeline config) whose values enter the hash."""


@dataclass
class StageContext:
    cfg: Any
    run_dir: Path
    out: Path
    stage: str
    key: str = ""
    """This stage's cache key (e.g. to name resumable training runs)."""
    metrics: dict = field(default_factory=dict)

    def input(self, stage: str) -> Path:
        """Folder of a finished upstream stage."""
        p = self.run_dir / stage
        if not (p / SUCCESS).exists():
            raise FileNotFoundError(f"stage {self.stage!r} needs stage {stage!r}, which has not finished in {self.run_dir}")
        return p


def _section_dict(cfg: Any, name: str) -> Any:
    obj = getattr(cfg, name)
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def stage_key(cfg: Any, stage: Stage, dep_keys: dict[str, str]) -> str:
    payload = {
        "stage": stage.name,
        "sections": {s: _section_dict(cfg, s) for s in stage.sections},
        "deps": {d: dep_keys[d] for d in stage.deps},
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def stage_done(run_dir: Path, name: str, key: str) -> bool:
    marker = run_dir / name / SUCCESS
    if not marker.exists():
        return False
    try:
        return read_json(marker).get("key") == key
    except (json.JSONDecodeError, OSError):
        return False


def run_stages(cfg: Any, stages: list[Stage], run_dir: str | Path, only: list[str] | None = None,
               force: list[str] | None = None) -> dict[str, dict]:
    """Run ``stages`` in order (deps must come first). Returns {stage: metrics-or-status}."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    keys: dict[str, str] = {}
    summary: dict[str, dict] = {}
    force = set(force or [])
    for st in stages:
        for d in st.deps:
            if d not in keys:
                raise ValueError(f"stage {st.name!r} depends on {d!r}, which is not earlier in the stage list")
        key = stage_key(cfg, st, keys)
        keys[st.name] = key
        if only is not None and st.name not in only:
            continue
        if st.name not in force and stage_done(run_dir, st.name, key):
            log.info("stage %-8s up to date (key %s), skipped", st.name, key)
            summary[st.name] = {"status": "skipped", "key": key}
            continue
        tmp = run_dir / f".{st.name}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        ctx = StageContext(cfg=cfg, run_dir=run_dir, out=tmp, stage=st.name, key=key)
        log.info("stage %-8s running (key %s)", st.name, key)
        t0 = time.time()
        metrics = st.run(ctx) or {}
        metrics = {**ctx.metrics, **metrics, "seconds": round(time.time() - t0, 3)}
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / SUCCESS, {"key": key, "finished": time.time()})
        final = run_dir / st.name
        if final.exists():
            trash = run_dir / f".{st.name}.old"
            if trash.exists():
                shutil.rmtree(trash)
            final.rename(trash)
            tmp.rename(final)
            shutil.rmtree(trash)
        else:
            tmp.rename(final)
        log.info("stage %-8s done in %.1fs", st.name, metrics["seconds"])
        summary[st.name] = {"status": "ran", "key": key, "metrics": metrics}
    return summary
