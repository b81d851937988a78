"""Config fields added after a build was pinned must not invalidate it: the Industrial recipe's stage keys
still match the pinned SID build's (benchmarks/pinned/industrial), so every kept run stays reusable."""
from __future__ import annotations

import json
from pathlib import Path

from raygen.config import load_config
from raygen.pipeline import STAGES
from raygen.runner import stage_keys

ROOT = Path(__file__).resolve().parents[1]


def test_industrial_recipe_keys_match_the_pinned_build():
    pin = json.loads((ROOT / "benchmarks/pinned/industrial/pin.json").read_text())
    keys = stage_keys(load_config(ROOT / "configs/industrial.yaml"), STAGES)
    assert {s: keys[s] for s in pin["stages"]} == pin["stages"]


def test_a_key_neutral_field_changes_the_key_once_it_leaves_its_default():
    cfg = load_config(ROOT / "configs/industrial.yaml")
    before = stage_keys(cfg, STAGES)["data"]
    cfg.data.table.interactions = "s3://bucket/interactions/"
    assert stage_keys(cfg, STAGES)["data"] != before
