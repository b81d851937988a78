from pathlib import Path

import pytest
import yaml

from raygen.config import load_config
from raygen.tune.config import load_sweep_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_preset_loads(path):
    if "sweep" in (yaml.safe_load(path.read_text()) or {}):
        cfg, sweep = load_sweep_config(path)
        assert sweep.lrs and sweep.inits
    else:
        cfg = load_config(path)
    assert cfg.run_dir
