"""The lm stage through the real runner: SID tokens added, rows initialised, model saved and reloadable."""
from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pytest
import torch

from raygen.data.schema import DataError
from raygen.io import read_json, write_parquet
from raygen.lm.config import LmConfig
from raygen.lm.stage import load_lm_output
from raygen.pipeline import stage
from raygen.runner import Stage, run_stages


@dataclass
class Cfg:
    lm: LmConfig = field(default_factory=LmConfig)


def sids_stage(tokens: pa.Table) -> Stage:
    def run(ctx):
        write_parquet(ctx.out / "tokens.parquet", tokens)
    return Stage(name="sids", run=run)


def test_lm_stage_end_to_end(tmp_path, tiny_model_dir, tiny_catalog):
    tokens = tiny_catalog["tokens"]
    shuffled = tokens.take(pa.array(list(reversed(range(tokens.num_rows)))))
    cfg = Cfg(lm=LmConfig(model=str(tiny_model_dir), init="sa_init", sa_init_depth=2, num_layers=1))
    summary = run_stages(cfg, [sids_stage(shuffled), stage("lm")], tmp_path / "run")
    m = summary["lm"]["metrics"]
    out = tmp_path / "run" / "lm"
    meta = read_json(out / "sid_ids.json")
    assert meta["tokens"][:3] == ["<a_0>", "<a_1>", "<a_2>"] and meta["tokens"][-1] == "<c_3>"
    assert meta["levels"] == sorted(meta["levels"]) and len(meta["ids"]) == tokens.num_rows == m["sid_tokens"]
    assert m["init"]["sa_init"] == 8 and m["init"]["mean_below_depth"] == 4
    assert m["num_hidden_layers"] == 1
    assert (out / "model" / "model.safetensors").exists()
    for name in m["diagnostics"]["files"]:
        assert (out / "diagnostics" / name).stat().st_size > 0
    model, tok, sid_ids = load_lm_output(out)
    assert tok.convert_ids_to_tokens(sid_ids.tolist()) == meta["tokens"]
    assert len(model.model.layers) == 1 and model.get_input_embeddings().weight.shape[0] == len(tok)
    w = model.get_input_embeddings().weight
    assert not torch.allclose(w[sid_ids[0]], w[sid_ids[1]])  # keyword init differs per token
    torch.testing.assert_close(w[sid_ids[-1]], w[sid_ids[-2]])  # level 2 >= depth: both the mean
    # rerun with the same config is skipped
    assert run_stages(cfg, [sids_stage(shuffled), stage("lm")], tmp_path / "run")["lm"]["status"] == "skipped"


def test_bad_tokens_table_names_field(tmp_path, tiny_model_dir):
    bad = pa.table({"level": pa.array([0], pa.int32()), "code": pa.array([1], pa.int32()),
                    "token": ["<b_1>"], "keywords": pa.array([["x"]], pa.list_(pa.string()))})
    cfg = Cfg(lm=LmConfig(model=str(tiny_model_dir)))
    with pytest.raises(DataError, match="tokens.parquet:0 field 'token'"):
        run_stages(cfg, [sids_stage(bad), stage("lm")], tmp_path / "run")
