"""The pipeline config: one dataclass section per stage, loaded from YAML with overrides.

    cfg = load_config("configs/default.yaml", ["sft.lr=1e-4", "data.source=minionerec"])

Each section's fields and their documentation live next to the stage that uses them
(``raygen/<stage>/config.py``); this module only composes them.
"""
from __future__ import annotations

import copy
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from raygen.configbase import (ConfigError, apply_overrides, from_dict, load_yaml, override_key, register_check,
                               to_dict)
from raygen.corpus.config import CorpusConfig
from raygen.data.config import DataConfig
from raygen.eval.config import EvalConfig
from raygen.lm.config import LmConfig
from raygen.rl.config import RlConfig
from raygen.sid.config import SidConfig
from raygen.tasks.config import TasksConfig
from raygen.train.config import AlignConfig, SftConfig

__all__ = ["RayConfig", "PipelineConfig", "load_config", "check_against_data", "ConfigError", "to_dict"]

log = logging.getLogger("raygen")


@dataclass
class RayConfig:
    address: str = ""
    """Ray cluster to join: '' starts/joins a local Ray, 'auto' joins a running cluster (ray job submit)."""
    num_cpus: int = 0
    """CPUs for a local Ray (0 = all of this machine's)."""
    dashboard: bool = False
    """Start the dashboard of a local Ray (bound to 127.0.0.1 only)."""
    connect_timeout_s: float = 60.0
    """Seconds to wait for the cluster at ``address`` to accept a connection (a cluster still starting is
    retried) before failing with a one-line error; Ray itself would retry an unreachable address forever."""

    def validate(self) -> None:
        if self.num_cpus < 0:
            raise ConfigError(f"ray.num_cpus: must be >= 0 (0 = all of this machine's), got {self.num_cpus}")
        if self.connect_timeout_s <= 0:
            raise ConfigError(f"ray.connect_timeout_s: must be > 0, got {self.connect_timeout_s}")


@dataclass
class PipelineConfig:
    run_dir: str = "runs/default"
    """Folder for all stage outputs; a rerun with the same config skips finished stages."""
    stages: list[str] = field(default_factory=list)
    """Run only these stages (empty = the whole pipeline)."""
    ray: RayConfig = field(default_factory=RayConfig)
    data: DataConfig = field(default_factory=DataConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    sids: SidConfig = field(default_factory=SidConfig)
    lm: LmConfig = field(default_factory=LmConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    sft: SftConfig = field(default_factory=SftConfig)
    rl: RlConfig = field(default_factory=RlConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        from raygen.pipeline import stage_names

        bad = [s for s in self.stages if s not in stage_names()]
        if bad:
            raise ConfigError(f"stages: unknown stage(s) {bad}; stages are {stage_names()}")


# --- checks of sections whose config classes live in stage packages (registered with from_dict) ---


def _at_least(obj, prefix: str, minimum, *names: str) -> None:
    for name in names:
        if getattr(obj, name) < minimum:
            raise ConfigError(f"{prefix}.{name}: must be >= {minimum}, got {getattr(obj, name)}")


def _check_eval(cfg: EvalConfig, prefix: str) -> None:
    prefix = prefix or "eval"
    if not cfg.ks:
        raise ConfigError(f"{prefix}.ks: give at least one cut-off K of HR@K / NDCG@K, e.g. [1, 5, 10]")
    for i, k in enumerate(cfg.ks):
        if k < 1:
            raise ConfigError(f"{prefix}.ks[{i}]: must be >= 1, got {k}")
    _at_least(cfg, prefix, 1, "beam_width", "batch_size")
    _at_least(cfg, prefix, 0, "max_rows", "search_max_rows")
    if cfg.sasrec.lr <= 0:
        raise ConfigError(f"{prefix}.sasrec.lr: must be > 0, got {cfg.sasrec.lr}")
    _at_least(cfg.sasrec, f"{prefix}.sasrec", 0, "weight_decay")


SMOLLM2_LAYERS = 30
"""Decoder layers of the packaged SmolLM2-135M-Instruct (lm.model 'smollm2')."""


def model_layers(model: str) -> int | None:
    """Decoder layers of ``lm.model`` when known without loading it: the packaged SmolLM2, or a local
    folder's config.json; None for an HF id or an unreadable config (checked when the lm stage loads it)."""
    from raygen.models import SMOLLM2_ALIASES

    if model in SMOLLM2_ALIASES:
        return SMOLLM2_LAYERS
    path = Path(model) / "config.json"
    try:
        conf = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None
    if not isinstance(conf, dict):
        return None
    for c in (conf, conf.get("text_config")):
        if isinstance(c, dict) and isinstance(c.get("num_hidden_layers"), int):
            return c["num_hidden_layers"]
    return None


def _check_lm(cfg: LmConfig, prefix: str) -> None:
    total = model_layers(cfg.model) if cfg.num_layers > 0 else None
    if total is not None and cfg.num_layers > total:
        raise ConfigError(f"{prefix or 'lm'}.num_layers: {cfg.num_layers} but {cfg.model} has only {total} layers "
                          "(0 = all)")


TRAIN_MODES = ("embeddings", "lora", "full")


def _check_train(cfg, prefix: str) -> None:
    if cfg.mode not in TRAIN_MODES:
        raise ConfigError(f"{prefix or 'train'}.mode: {cfg.mode!r} is not one of {list(TRAIN_MODES)}")
    _at_least(cfg, prefix or "train", 1, "lora_alpha")


register_check(EvalConfig, _check_eval)
register_check(LmConfig, _check_lm)
register_check(AlignConfig, _check_train)
register_check(SftConfig, _check_train)


# --- checks against the data (before any stage runs) --------------------------------------------


def catalog_size(cfg: "PipelineConfig") -> tuple[int, str] | None:
    """``(items, where the number comes from)`` of the catalog this config's stages will see: the run's
    finished data stage when its key matches, else ``data.synthetic.n_items`` for the synthetic source;
    None when unknown before the data stage runs (or the run folder is not a local one)."""
    from raygen.pipeline import stage
    from raygen.runner import stage_key, success_key

    data = Path(cfg.run_dir) / "data"
    items = data / "items.parquet"
    try:
        if success_key(data) == stage_key(cfg, stage("data"), {}) and items.is_file():
            import pyarrow.parquet as pq

            return pq.ParquetFile(items).metadata.num_rows, str(items)
    except (OSError, ValueError):  # unreadable: the data stage (or the stage reading it) reports it
        pass
    except KeyError:  # a stage graph without a data stage (tests of the runner): nothing to check against
        return None
    if cfg.data.source == "synthetic":
        return cfg.data.synthetic.n_items, "data.synthetic.n_items"
    return None


def check_against_data(cfg: "PipelineConfig") -> None:
    """ConfigError (one line, naming the key) for a value shaped by the catalog that cannot fit it: a beam
    (``eval.beam_width``, ``align/sft.valid_beam`` with validation on, ``rl.group_size`` with beam
    rollouts) wider than the catalog has items. Before any stage runs, so a typo like
    ``eval.beam_width=100000`` never reaches an allocation (the beam search bounds its memory too)."""
    known = catalog_size(cfg)
    if known is None:
        return
    n, where = known
    beams = [("eval.beam_width", cfg.eval.beam_width, "items ranked per row")]
    beams += [(f"{s}.valid_beam", getattr(cfg, s).valid_beam, "items ranked per validation row")
              for s in ("align", "sft") if getattr(cfg, s).valid_every > 0]
    if cfg.rl.rollout_mode == "beam":
        beams.append(("rl.group_size", cfg.rl.group_size, "distinct items per beam-search group"))
    for key, value, what in beams:
        if value > n:
            raise ConfigError(f"{key}: {value} {what}, but the catalog has {n} items ({where}): use at most {n}")


# --- loading --------------------------------------------------------------------------------------


def _names_key(msg: str, key: str) -> bool:
    """Whether an error message names dotted ``key`` (itself, or a key below it)."""
    return re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", msg) is not None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """Load a YAML config (or the defaults when ``path`` is None) and apply ``section.field=value`` overrides.

    An error names where the bad value came from (see :func:`build_attributed`).
    """
    return build_attributed(path, overrides, lambda data: from_dict(PipelineConfig, data))


# --- keys of older raygen versions (run folders' config.yaml, old command lines) -------------------

REMOVED_KEYS = {
    "seed": "the top-level seed was read by no stage; each section has its own seed",
    "tasks.max_len": "read by no stage; align.max_len / sft.max_len cut the training rows",
}
"""Keys older raygen versions wrote (run folders' config.yaml): ignored with a warning, not an error."""


def _legacy_resources(section: str, block: str, **old: str) -> dict[str, str]:
    return {f"{section}.{name}": f"{section}.{block}.{new}" for new, name in old.items()}


RENAMED_KEYS: dict[str, str] = {
    "rl.lora_targets": "rl.lora_target_modules",
    "rl.max_grad_norm": "rl.grad_clip",
    # one resources block (count, cpus, gpus) per actor / worker / trial group
    **_legacy_resources("corpus", "embed_resources", count="embed_concurrency", cpus="embed_num_cpus",
                        gpus="embed_num_gpus"),
    **_legacy_resources("corpus", "keyword_resources", count="keyword_concurrency", cpus="keyword_num_cpus",
                        gpus="keyword_num_gpus"),
    **_legacy_resources("eval", "resources", count="num_actors", gpus="num_gpus_per_actor"),
    **_legacy_resources("rl", "rollout_resources", count="num_rollout_actors", cpus="rollout_num_cpus",
                        gpus="rollout_num_gpus"),
    **_legacy_resources("rl", "learner_resources", count="train_workers", gpus="use_gpu"),
    **_legacy_resources("align", "resources", count="num_workers", cpus="cpus_per_worker", gpus="use_gpu"),
    **_legacy_resources("sft", "resources", count="num_workers", cpus="cpus_per_worker", gpus="use_gpu"),
    **_legacy_resources("sweep", "trial_resources", count="max_concurrent_trials", cpus="trial_cpus"),
}
"""Old dotted key -> new dotted key, for knobs renamed so every section names them the same way: the value
moves to the new key with a warning; giving both is an error. (The sweep's keys are here too: a sweep YAML
is a pipeline config plus a ``sweep`` section.)"""


def _gpu_flag(old: str, value):
    """``use_gpu: true/false`` -> ``gpus: 1/0`` (what the flag reserved: one GPU per worker / learner)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{old}: expected true/false, got {value!r}")
    return 1.0 if value else 0.0


RENAMED_VALUES = {old: _gpu_flag for old in RENAMED_KEYS if old.endswith(".use_gpu")}
"""How the value of a renamed key changes on its way to the new key."""


def _parent(data, dotted: str):
    """``(mapping holding dotted's last part, that part)``; the mapping is None when a parent is missing."""
    *parents, leaf = dotted.split(".")
    node = data
    for p in parents:
        node = node.get(p) if isinstance(node, dict) else None
    return (node if isinstance(node, dict) else None), leaf


def _renamed_value(old: str, value):
    convert = RENAMED_VALUES.get(old)
    return convert(old, value) if convert else value


def upgrade_keys(data: dict, where: str) -> dict:
    """A copy of config ``data`` (nested dicts) with :data:`REMOVED_KEYS` dropped and :data:`RENAMED_KEYS`
    moved to their new keys, each with a one-line warning naming ``where``; an old key given next to its
    new key is a ConfigError naming both."""
    if not isinstance(data, dict):
        return data
    data = copy.deepcopy(data)
    for dotted, why in REMOVED_KEYS.items():
        node, leaf = _parent(data, dotted)
        if node is not None and leaf in node:
            del node[leaf]
            log.warning("%s: ignoring removed config key %r (%s)", where, dotted, why)
    for old, new in RENAMED_KEYS.items():
        node, leaf = _parent(data, old)
        if node is None or leaf not in node:
            continue
        *parents, new_leaf = new.split(".")
        target = data
        for i, p in enumerate(parents):
            target = target.setdefault(p, {})
            if not isinstance(target, dict):
                raise ConfigError(f"{'.'.join(parents[:i + 1])}: expected a mapping, got {target!r}")
        if new_leaf in target:
            raise ConfigError(f"{old} is the old name of {new}; give only one")
        target[new_leaf] = _renamed_value(old, node.pop(leaf))
        log.warning("%s: config key %r is now %r", where, old, new)
    return data


def _upgrade_override(ov: str) -> str | None:
    """Override ``ov`` with an old key renamed (its value converted), None for a removed key; warns as
    :func:`upgrade_keys`."""
    key = override_key(ov)
    if key in REMOVED_KEYS:
        log.warning("command line: ignoring removed config key %r (%s)", key, REMOVED_KEYS[key])
        return None
    new = RENAMED_KEYS.get(key)
    if new is None:
        return ov
    node, leaf = _parent(apply_overrides({}, [ov]), key)  # the value as YAML, as apply_overrides reads it
    try:
        value = _renamed_value(key, node[leaf])
    except ConfigError as e:
        raise ConfigError(f"command-line override {ov!r}: {e}") from None
    log.warning("command line: config key %r is now %r", key, new)
    return f"{new}={json.dumps(value)}"


def build_attributed(path: str | Path | None, overrides: list[str] | None, build):
    """``build(data)`` on the YAML at ``path`` (or ``{}``) with ``overrides`` applied, old keys of both
    upgraded (:func:`upgrade_keys`; the file's first, so an override of a new key wins over the file's
    old one). A ConfigError names where the bad value came from: the command-line override whose key
    (old or new) the error names (or, when the file alone builds, the overrides), else the YAML file.
    ``build`` must not mutate ``data``."""
    data = load_yaml(path) if path else {}
    try:
        data = upgrade_keys(data, str(path or "config"))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None
    pairs = [(ov, up) for ov in overrides or [] if (up := _upgrade_override(ov)) is not None]
    _one_name_per_key(pairs)
    file_only = copy.deepcopy(data)
    data = apply_overrides(data, [up for _, up in pairs])
    try:
        return build(upgrade_keys(data, "command line"))  # old keys inside an override's mapping value
    except ConfigError as e:
        msg = str(e)
        named = [ov for ov, up in pairs if _names_key(msg, override_key(up)) or _names_key(msg, override_key(ov))]
        if named:
            raise ConfigError(f"command-line override {named[-1]!r}: {msg}") from None
        if pairs and (not path or _builds(build, file_only)):
            given = [ov for ov, _ in pairs]
            which = f"override {given[0]!r}" if len(given) == 1 else f"overrides {given}"
            raise ConfigError(f"command-line {which}: {msg}") from None
        raise ConfigError(f"{path}: {msg}" if path else msg) from None


def _one_name_per_key(pairs: list[tuple[str, str]]) -> None:
    """An old key and its new key both on the command line is an error (as in a file)."""
    given = {override_key(ov): ov for ov, _ in pairs}
    for ov, up in pairs:
        old, new = override_key(ov), override_key(up)
        if old != new and new in given:
            raise ConfigError(f"command-line overrides {ov!r} and {given[new]!r}: {old} is the old name of {new}; "
                              "give only one")


def _builds(build, data: dict) -> bool:
    try:
        build(data)
    except ConfigError:
        return False
    return True
