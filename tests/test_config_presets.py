"""Every preset in configs/ loads, validates, and means what its YAML says: each leaf value written
in the file is the value of that field in the loaded config (nothing renamed, dropped or defaulted)."""
from dataclasses import is_dataclass
from pathlib import Path

import pytest
import yaml

from raygen.config import load_config
from raygen.tune.config import load_sweep_config

ROOT = Path(__file__).resolve().parents[1]


def _leaves(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _field(obj, dotted: str):
    for part in dotted.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_preset_loads_with_the_values_it_writes(path):
    raw = yaml.safe_load(path.read_text()) or {}
    if "sweep" in raw:
        cfg, sweep = load_sweep_config(path)
        assert sweep.lrs and sweep.inits
        roots = {"sweep": sweep}
    else:
        cfg, roots = load_config(path), {}
    checked = 0
    for key, value in _leaves(raw):
        head = key.split(".", 1)
        got = _field(roots[head[0]], head[1]) if head[0] in roots else _field(cfg, key)
        assert not is_dataclass(got), key
        assert got == value or (isinstance(value, int) and got == float(value)), (key, value, got)
        checked += 1
    assert checked >= 5


def _paths(raw: dict):
    """(key, value) of every path-like leaf: run_dir, *.path, *_dir and any string with a '/'."""
    for key, value in _leaves(raw):
        if isinstance(value, str) and (key == "run_dir" or key.endswith((".path", "_dir")) or "/" in value):
            yield key, value


def test_gpu_preset_uses_only_absolute_or_uri_paths():
    """Under `ray job submit` a relative path lands in the job's temporary working dir: gpu.yaml has none."""
    from raygen.storage import is_uri

    raw = yaml.safe_load((ROOT / "configs" / "gpu.yaml").read_text())
    paths = dict(_paths(raw))
    assert {"run_dir", "data.path"} <= set(paths)
    model_ids = {"lm.model", "corpus.embed_model", "corpus.teacher_model"}  # names, not paths
    bad = {k: v for k, v in paths.items() if k not in model_ids and not (is_uri(v) or v.startswith("/"))}
    assert not bad, bad
    assert is_uri(raw["run_dir"])  # shared by every node


# Fields of the Industrial recipe (configs/industrial.yaml) that the GPU preset must not change: what trains,
# on what data, with which SID/init/alignment/RL choices. Hardware fields (resources, batch sizes of the
# embedders, precision), paths and the teacher (unused by the 'mean' init) may differ.
RECIPE = ["data.source", "data.max_history", "corpus.embed_model", "sids.method", "sids.levels",
          "sids.codebook_size", "lm.model", "lm.num_layers", "lm.init", "tasks", "align.enabled", "sft.mode",
          "sft.epochs", "sft.batch_size", "sft.pad_to", "sft.max_len", "sft.sid_only_head", "sft.lr",
          "sft.warmup_steps", "sft.valid_every", "sft.valid_rows", "sft.patience", "sft.checkpoint_every",
          "sft.resources.count", "rl.enabled", "eval.max_rows", "eval.ks", "eval.beam_width", "eval.baselines"]


def test_gpu_preset_runs_the_industrial_recipe_on_gpus():
    gpu, ind = load_config(ROOT / "configs" / "gpu.yaml"), load_config(ROOT / "configs" / "industrial.yaml")
    for key in RECIPE:
        assert _field(gpu, key) == _field(ind, key), key
    assert gpu.lm.init == "mean" and not gpu.align.enabled and not gpu.rl.enabled  # what won on Industrial
    assert gpu.sids.device == "cuda" and gpu.sft.resources.gpus >= 1 and gpu.eval.resources.gpus > 0
    assert gpu.corpus.embed_resources.gpus > 0
    assert gpu.ray.address == "auto"  # joins the cluster; never starts a Ray of its own on the head
