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
