"""The raygen stage graph: data -> corpus -> sids -> lm -> align -> sft -> rl -> eval -> report.

Each entry names the stage, the stage it follows (``deps``), the other upstream stages whose folders
it reads (``reads``) and the config sections it reads, which are also what enters its cache key (see
raygen.runner: the runner hands a stage only what it declares here). The run functions live in each stage's subpackage.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Callable

from raygen.runner import Stage, run_stages

CONFIG_FILE = "config.yaml"
"""The resolved config of the latest ``run_pipeline`` call, in the run folder (read by ``raygen recommend``)."""


def _lazy(path: str) -> Callable:
    """Import ``module:function`` only when the stage runs (keeps `raygen --help` fast)."""
    mod, fn = path.split(":")

    def run(ctx):
        return getattr(importlib.import_module(mod), fn)(ctx)

    return run


STAGES: list[Stage] = [
    Stage("data", _lazy("raygen.data.stage:run_data"), deps=(), sections=("data",)),
    Stage("corpus", _lazy("raygen.corpus.stage:run_corpus"), deps=("data",), sections=("corpus",)),
    Stage("sids", _lazy("raygen.sid.stage:run_sids"), deps=("corpus",), sections=("sids",)),
    Stage("lm", _lazy("raygen.lm.stage:run_lm_init"), deps=("sids",), sections=("lm",)),
    Stage("align", _lazy("raygen.train.stages:run_align"), deps=("lm",), sections=("align", "tasks"),
          reads=("data", "sids")),
    Stage("sft", _lazy("raygen.train.stages:run_sft"), deps=("align",), sections=("sft", "tasks"),
          reads=("data", "sids", "lm", "corpus")),  # corpus: the search task's queries
    # rl reads eval (keep-best validation: beam, ks, SID-only head) and tasks (prompts)
    Stage("rl", _lazy("raygen.rl.stage:run_rl"), deps=("sft",), sections=("rl", "eval", "tasks"),
          reads=("data", "sids", "corpus")),
    Stage("eval", _lazy("raygen.eval.stage:run_eval"), deps=("rl",), sections=("eval", "tasks"),
          reads=("data", "sids", "corpus")),  # corpus: the search queries
    # the report summarises every stage's metrics.json (and no config section)
    Stage("report", _lazy("raygen.report.stage:run_report"), deps=("eval",), sections=(),
          reads=("data", "corpus", "sids", "lm", "align", "sft", "rl")),
]


def stage_names() -> list[str]:
    return [s.name for s in STAGES]


def stage(name: str) -> Stage:
    """The pipeline's definition of stage ``name`` (the one stage graph: no module defines its own)."""
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"no stage {name!r}; stages are {stage_names()}")


CONFIG_HEADER = "# Resolved config of the latest `raygen run` in this folder (written by raygen)."
"""First line of every config.yaml raygen writes: a config.yaml without it is the user's own and is never
overwritten."""

SYSTEM_DIRS = ("/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/opt", "/proc",
               "/root", "/run", "/sbin", "/srv", "/sys", "/usr", "/var", "/home", "/mnt", "/media", "/tmp")
"""Refused as run folders (and, for the first ten-odd, anything under them that the OS owns: see
:func:`check_run_dir`): a run writes and deletes stage folders at its top level."""
_SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin", "/sys",
                 "/usr")


def check_run_dir(run_dir: str | Path) -> None:
    """RunnerError (one line) when ``run_dir`` is a system folder, the home folder itself, or a local path
    that cannot be a writable folder (a file on the way, read-only, permission denied). Creates it."""
    import os

    from raygen import storage
    from raygen.runner import RunnerError

    if storage.is_uri(run_dir):
        return
    path = Path(os.path.abspath(os.path.expanduser(str(run_dir))))
    real = Path(os.path.realpath(path))
    for p in {path, real}:
        under = [t for t in _SYSTEM_TREES if p == Path(t) or Path(t) in p.parents]
        if str(p) in SYSTEM_DIRS or p == Path.home() or under:
            raise RunnerError(f"run_dir {run_dir} is a system folder{' (' + str(p) + ')' if p != path else ''} "
                              f"or lies in one ({under[0] if under else p}); choose a folder of its own, e.g. "
                              "runs/<name>")
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except FileExistsError:
        raise RunnerError(f"run_dir {run_dir} exists and is not a folder") from None
    except OSError as e:
        raise RunnerError(f"run_dir {run_dir} cannot be used as a run folder: {e.strerror or e}") from None


def check_config_file(run_dir: str | Path) -> None:
    """RunnerError when ``<run_dir>/config.yaml`` exists and was not written by raygen (the user's own)."""
    from raygen import storage
    from raygen.runner import RunnerError

    path = storage.join(str(run_dir), CONFIG_FILE)
    try:
        head = storage.read_bytes(path)[:len(CONFIG_HEADER)]
    except FileNotFoundError:
        return
    except OSError as e:
        raise RunnerError(f"{path} cannot be read: {e}") from None
    if head != CONFIG_HEADER.encode():
        raise RunnerError(f"{path} exists and was not written by raygen (it lacks raygen's header line); raygen "
                          "never overwrites it: move it away or choose another run_dir")


def save_config(cfg, run_dir: str | Path) -> Path:
    """Write the resolved config (every field, defaults included) to ``<run_dir>/config.yaml``, atomically
    (``run_dir`` may be a URI: an object store's PUT is atomic). Returns the local path, or for a URI
    the local mirror's copy.

    ``load_config`` of that file rebuilds the same config, hence the same stage keys.
    """
    import yaml

    from raygen import runstore, storage
    from raygen.configbase import to_dict
    from raygen.io import atomic_path

    plain = json.loads(json.dumps(to_dict(cfg), default=str))  # tuples -> lists: safe_dump-able
    text = CONFIG_HEADER + "\n" + yaml.safe_dump(plain, sort_keys=False)
    local_dir = runstore.mirror_of(str(run_dir)) if storage.is_uri(run_dir) else Path(run_dir)
    with atomic_path(local_dir / CONFIG_FILE) as tmp:
        tmp.write_text(text)
    if storage.is_uri(run_dir):
        storage.write_bytes(storage.join(str(run_dir), CONFIG_FILE), text.encode())
    return local_dir / CONFIG_FILE


def run_pipeline(cfg, only: list[str] | None = None, force: list[str] | None = None, wait_lock: float = 0.0) -> dict:
    """Run the stage graph (or ``only`` some stages) into ``cfg.run_dir`` (a path or a URI) holding its run
    lock (``wait_lock`` seconds to wait for another run to finish; 0: refuse at once). The run's
    config.yaml is written each time a stage commits, never by a run that commits nothing (a failed or
    refused run leaves what a finished run serves as it was)."""
    from raygen.configbase import ConfigError
    from raygen.ray_utils import init_ray
    from raygen.runlock import RunLock
    from raygen.runner import RunnerError, clean_leftovers

    only = only or cfg.stages or None
    unknown = set(only or []) | set(force or [])
    unknown -= set(stage_names())
    if unknown:
        raise ConfigError(f"unknown stage(s) {sorted(unknown)}; stages are {stage_names()}")
    check_run_dir(cfg.run_dir)
    from raygen.config import check_against_data

    check_against_data(cfg)  # a beam wider than the catalog: refused before the lock, Ray or any stage
    try:
        lock = RunLock(str(cfg.run_dir), wait_s=wait_lock).acquire()
    except OSError as e:
        raise RunnerError(f"run_dir {cfg.run_dir}: cannot write its run lock: {e.strerror or e}") from None
    try:
        check_config_file(cfg.run_dir)
        clean_leftovers(cfg.run_dir, stage_names())
        init_ray(cfg.ray)
        return run_stages(cfg, STAGES, cfg.run_dir, only=only, force=force, lock=lock,
                          on_commit=lambda _stage: save_config(cfg, cfg.run_dir))
    finally:
        lock.release()
