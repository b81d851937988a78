"""bf16 'auto' | true | false: hardware detection, resolution per device, config loading."""
from __future__ import annotations

import pytest

from raygen.configbase import ConfigError, Resources, apply_overrides, from_dict
from raygen.corpus.config import CorpusConfig
from raygen.eval.config import EvalConfig
from raygen.precision import cpu_native_bf16, resolve_bf16
from raygen.rl.config import RlConfig
from raygen.train.config import TrainConfig


@pytest.mark.parametrize("raw,expected", [("1", True), ("0", False), ("true", True), ("off", False)])
def test_env_override(monkeypatch, raw, expected):
    monkeypatch.setenv("RAYGEN_CPU_BF16", raw)
    assert cpu_native_bf16() is expected


def test_env_override_rejects_garbage(monkeypatch):
    monkeypatch.setenv("RAYGEN_CPU_BF16", "maybe")
    with pytest.raises(ValueError, match="RAYGEN_CPU_BF16"):
        cpu_native_bf16()


def test_detection_without_override_is_a_bool(monkeypatch):
    monkeypatch.delenv("RAYGEN_CPU_BF16", raising=False)
    assert isinstance(cpu_native_bf16(), bool)


@pytest.mark.parametrize("native", [True, False])
def test_resolve_on_cpu(monkeypatch, native):
    monkeypatch.setenv("RAYGEN_CPU_BF16", "1" if native else "0")
    use, why = resolve_bf16("auto", "cpu")
    assert use is native and why.startswith("auto:")
    assert ("-> bf16" if native else "-> fp32") in why
    assert f"RAYGEN_CPU_BF16={'1' if native else '0'}" in why  # the override, not a probe, decided
    use, why = resolve_bf16(True, "cpu")
    assert use is True and (("slower" in why) is not native)
    use, why = resolve_bf16(False, "cpu")
    assert use is False and "fp32" in why


def test_resolve_rejects_bad_setting():
    with pytest.raises(ConfigError):
        resolve_bf16("yes", "cpu")


@pytest.mark.parametrize("section,cls", [("sft", TrainConfig), ("align", TrainConfig), ("eval", EvalConfig)])
def test_config_accepts_auto_true_false(section, cls):
    assert cls().bf16 == "auto"
    for value in ("auto", True, False):
        assert from_dict(cls, {"bf16": value}, prefix=section).bf16 == value
    # YAML text and CLI overrides: `bf16: auto`, `sft.bf16=true`
    data = apply_overrides({}, [f"{section}.bf16=auto"])
    assert from_dict(cls, data[section], prefix=section).bf16 == "auto"
    data = apply_overrides({}, [f"{section}.bf16=false"])
    assert from_dict(cls, data[section], prefix=section).bf16 is False


@pytest.mark.parametrize("section,cls", [("sft", TrainConfig), ("eval", EvalConfig)])
@pytest.mark.parametrize("bad", ["bogus", 1, "Auto", None])
def test_config_rejects_other_values_naming_the_key(section, cls, bad):
    with pytest.raises(ConfigError, match=rf"{section}\.bf16"):
        from_dict(cls, {"bf16": bad}, prefix=section)


def test_pipeline_config_loading(tmp_path):
    from raygen.config import load_config

    cfg = load_config(None, ["sft.bf16=auto", "align.bf16=true", "eval.bf16=false"])
    assert (cfg.sft.bf16, cfg.align.bf16, cfg.eval.bf16) == ("auto", True, False)
    path = tmp_path / "c.yaml"
    path.write_text("sft:\n  bf16: auto\neval:\n  bf16: true\n")
    cfg = load_config(path)
    assert (cfg.sft.bf16, cfg.eval.bf16) == ("auto", True)
    with pytest.raises(ConfigError, match=r"sft\.bf16: 'bogus'"):
        load_config(None, ["sft.bf16=bogus"])


def test_bf16_impl_check_still_works():
    with pytest.raises(ConfigError, match="bf16_impl='deepspeed' needs deepspeed"):
        from_dict(TrainConfig, {"bf16": True, "bf16_impl": "deepspeed", "deepspeed": False})
    with pytest.raises(ConfigError, match="bf16_impl='deepspeed' needs deepspeed"):
        from_dict(TrainConfig, {"bf16": "auto", "bf16_impl": "deepspeed", "deepspeed": False})
    assert from_dict(TrainConfig, {"bf16": False, "bf16_impl": "deepspeed", "deepspeed": False}).bf16 is False


def test_deepspeed_config_resolves_auto(monkeypatch):
    from raygen.train.deepspeed_cfg import deepspeed_config

    cfg = TrainConfig(bf16="auto", bf16_impl="deepspeed")
    monkeypatch.setenv("RAYGEN_CPU_BF16", "0")
    assert deepspeed_config(cfg, bf16_ok=True)["bf16"]["enabled"] is False
    monkeypatch.setenv("RAYGEN_CPU_BF16", "1")
    assert deepspeed_config(cfg, bf16_ok=True)["bf16"]["enabled"] is True
    assert deepspeed_config(cfg, bf16_ok=True, bf16=False)["bf16"]["enabled"] is False


def _tiny_search_inputs(tiny_llama):
    import numpy as np
    import torch

    from raygen.eval.rows import Catalog, Rows

    vocab, n = 60, 4
    model = tiny_llama(vocab_size=vocab, initializer_range=0.2)
    sid = torch.tensor([[vocab - 8 + a, vocab - 4 + b] for a in range(n) for b in range(n)])
    catalog = Catalog(item_ids=np.arange(100, 100 + len(sid), dtype=np.int64), sid_matrix=sid)
    prompts = [[5, 6, 7], [8, 9]]
    rows = Rows(row_ids=np.arange(2), prompt_ids=prompts, targets=np.array([100, 101]), histories=[[1], [2]])
    return model, catalog, rows


@pytest.mark.parametrize("native", [True, False])
def test_beam_rank_resolves_and_records_precision(monkeypatch, tiny_llama, native, caplog):
    import logging

    from raygen.eval.stage import beam_rank

    monkeypatch.setenv("RAYGEN_CPU_BF16", "1" if native else "0")
    model, catalog, rows = _tiny_search_inputs(tiny_llama)
    cfg = EvalConfig(beam_width=3, ks=[1, 3], resources=Resources(count=0), batch_size=2)
    precision: dict = {}
    with caplog.at_level(logging.INFO, logger="raygen"):
        topk, _ = beam_rank(None, rows, catalog, cfg, pad_id=3, model=model, precision=precision)
    assert topk.shape == (2, 3)
    assert precision["bf16"] is native and precision["reason"].startswith("auto: CPU")
    assert any("eval precision" in r.getMessage() for r in caplog.records)


def test_generation_backend_resolves_on_its_device(monkeypatch, tiny_llama, tmp_path):
    """The generation pool's 'hf' backend (evaluation and RL rollouts) resolves bf16 for its own device."""
    from raygen.generation.backends import HFBackend

    model, catalog, rows = _tiny_search_inputs(tiny_llama)
    model.save_pretrained(tmp_path / "m", safe_serialization=True)
    monkeypatch.setenv("RAYGEN_CPU_BF16", "0")
    w = HFBackend(str(tmp_path / "m"), catalog.sid_matrix, 3, batch_size=2, bf16="auto")
    assert w.precision_info() == {"bf16": False,
                                  "reason": "auto: CPU treated as lacking native bf16 (RAYGEN_CPU_BF16=0) -> fp32"}
    assert w.autocast_dtype is None
    monkeypatch.setenv("RAYGEN_CPU_BF16", "1")
    w = HFBackend(str(tmp_path / "m"), catalog.sid_matrix, 3, batch_size=2, bf16="auto")
    assert w.precision_info()["bf16"] is True and str(w.autocast_dtype) == "torch.bfloat16"
    ro = w.generate(rows.prompt_ids, 3, "beam")
    assert ro.items.shape == (2, 3)


@pytest.mark.parametrize("native", [True, False])
def test_engine_dtype_follows_the_hardware(monkeypatch, native):
    """Inference engines (vLLM, the HF teacher) get a weight dtype, not autocast: bf16 only where native."""
    from raygen.precision import engine_dtype

    monkeypatch.setenv("RAYGEN_CPU_BF16", "1" if native else "0")
    dtype, why = engine_dtype("auto", "cpu")
    assert dtype == ("bfloat16" if native else "float32") and why.startswith("auto: CPU")
    assert engine_dtype(True, "cpu")[0] == "bfloat16" and engine_dtype(False, "cpu")[0] == "float32"
    with pytest.raises(ConfigError):
        engine_dtype("bf16", "cpu")


@pytest.mark.parametrize("key,klass,field", [("corpus.teacher_bf16", CorpusConfig, "teacher_bf16"),
                                             ("rl.rollout_bf16", RlConfig, "rollout_bf16")])
def test_engine_settings_validate_naming_the_key(key, klass, field):
    assert getattr(klass(), field) == "auto"
    for ok in ("auto", True, False):
        klass(**{field: ok}).validate()
    with pytest.raises(ConfigError, match=rf"{key}: 'yes' is not one of"):
        klass(**{field: "yes"}).validate()


@pytest.mark.parametrize("native", [True, False])
def test_hf_teacher_weights_follow_the_hardware(monkeypatch, tiny_model_dir, native):
    import torch

    from raygen.corpus.stage import teacher_precision
    from raygen.corpus.teacher import HFBackend

    monkeypatch.setenv("RAYGEN_CPU_BF16", "1" if native else "0")
    t = HFBackend(str(tiny_model_dir))
    assert t.model.dtype == (torch.bfloat16 if native else torch.float32)
    assert t.precision["dtype"] == ("bfloat16" if native else "float32")
    assert HFBackend(str(tiny_model_dir), dtype="float32").model.dtype == torch.float32  # explicit dtype wins
    assert HFBackend(str(tiny_model_dir), bf16=False).model.dtype == torch.float32
    recorded = teacher_precision(CorpusConfig(keyword_backend="hf"))
    assert recorded["dtype"] == t.precision["dtype"] and recorded["setting"] == "auto"
    assert teacher_precision(CorpusConfig(keyword_backend="fallback")) is None


def test_resolve_reason_names_the_probe_without_override(monkeypatch):
    monkeypatch.delenv("RAYGEN_CPU_BF16", raising=False)
    use, why = resolve_bf16("auto", "cpu")
    assert "RAYGEN_CPU_BF16" not in why
    assert why.endswith("-> bf16") if use else why == "auto: CPU without AVX512-BF16/AMX -> fp32"
