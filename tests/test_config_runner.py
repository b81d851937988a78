import json

import pytest

from raygen.config import PipelineConfig, load_config
from raygen.configbase import ConfigError
from raygen.runner import SUCCESS, Stage, run_stages


def test_defaults_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("run_dir: runs/x\ndata:\n  source: synthetic\n  synthetic:\n    n_items: 50\n")
    cfg = load_config(p, ["sft.lr=3e-4", "sids.levels=4", "data.synthetic.n_users=7", "corpus.normalize=false"])
    assert isinstance(cfg, PipelineConfig)
    assert cfg.data.synthetic.n_items == 50 and cfg.data.synthetic.n_users == 7
    assert cfg.sids.levels == 4 and cfg.corpus.normalize is False
    assert cfg.sids.codebook_size == 256  # untouched default
    assert cfg.sft.lr == 3e-4  # '3e-4' is a string to YAML 1.1


@pytest.mark.parametrize("text,needle", [
    ("sids:\n  levles: 3\n", "sids.levles"),
    ("sids:\n  levels: three\n", "sids.levels"),
    ("data:\n  source: nowhere\n", "data.source"),
    ("data:\n  synthetic:\n    n_items: 1.5\n", "data.synthetic.n_items"),
])
def test_bad_config_names_the_key(tmp_path, text, needle):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(p)


def test_missing_file_is_clear():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/raygen.yaml")


def _stages(calls, fail_in=None):
    def make(name):
        def run(ctx):
            calls.append(name)
            if name == fail_in:
                (ctx.out / "partial.txt").write_text("half")
                raise RuntimeError("boom")
            (ctx.out / "out.txt").write_text(name + str(ctx.cfg.data.seed))
            if name == "b":
                assert (ctx.input("a") / "out.txt").exists()
            return {"value": len(calls)}
        return run
    return [Stage("a", make("a"), sections=("data",)),
            Stage("b", make("b"), deps=("a",), sections=("sids",)),
            Stage("c", make("c"), deps=("b",), sections=("corpus",))]


def test_runner_skips_resumes_and_invalidates(tmp_path):
    cfg = PipelineConfig()
    calls = []
    with pytest.raises(RuntimeError):
        run_stages(cfg, _stages(calls, fail_in="c"), tmp_path)
    assert calls == ["a", "b", "c"]
    assert (tmp_path / "b" / SUCCESS).exists() and not (tmp_path / "c").exists()  # no half stage in place

    calls.clear()
    summary = run_stages(cfg, _stages(calls), tmp_path)  # resume: only c runs
    assert calls == ["c"]
    assert summary["a"]["status"] == "skipped" and summary["c"]["status"] == "ran"
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())["value"] == 1

    calls.clear()
    cfg.sids.levels = 5  # changes b's key and therefore c's
    run_stages(cfg, _stages(calls), tmp_path)
    assert calls == ["b", "c"]

    calls.clear()
    cfg.data.seed = 3  # upstream change invalidates everything
    run_stages(cfg, _stages(calls), tmp_path)
    assert calls == ["a", "b", "c"]
    assert (tmp_path / "a" / "out.txt").read_text() == "a3"
    assert not list(tmp_path.glob(".*.tmp")) and not list(tmp_path.glob(".*.old"))


def test_runner_rejects_bad_order(tmp_path):
    st = [Stage("b", lambda ctx: {}, deps=("a",))]
    with pytest.raises(ValueError, match="depends on 'a'"):
        run_stages(PipelineConfig(), st, tmp_path)
