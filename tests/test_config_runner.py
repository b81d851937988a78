import json

import pytest

from raygen.config import PipelineConfig, load_config
from raygen.configbase import ConfigError, Resources
from raygen.runner import (STAGE_MARKER, SUCCESS, RunnerError, Stage, StageContractError, link_finished, run_stages,
                           stage_keys)


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
            (ctx.out / "out.txt").write_text(name + (str(ctx.cfg.data.seed) if name == "a" else ""))
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


# --- issue 10: the stage contract is enforced --------------------------------------------------


def test_a_stage_reading_an_undeclared_section_fails(tmp_path):
    """A stage whose result depends on a section its key does not cover would go stale silently."""
    st = [Stage("a", lambda ctx: {"lr": ctx.cfg.sft.lr}, sections=("data",))]
    with pytest.raises(StageContractError, match=r"stage 'a' read cfg\.sft.*declared sections \['data'\]"):
        run_stages(PipelineConfig(), st, tmp_path)
    assert not (tmp_path / "a").exists()
    ok = [Stage("a", lambda ctx: {"lr": ctx.cfg.sft.lr, "run": str(ctx.cfg.run_dir), "ray": ctx.cfg.ray.num_cpus},
                sections=("sft",))]
    assert run_stages(PipelineConfig(), ok, tmp_path)["a"]["metrics"]["lr"] == PipelineConfig().sft.lr
    with pytest.raises(StageContractError, match="read-only"):
        run_stages(PipelineConfig(), [Stage("b", lambda ctx: setattr(ctx.cfg, "sft", None), sections=("sft",))],
                   tmp_path)


def test_a_stage_reads_only_the_stage_folders_it_declares(tmp_path):
    def reads(name):
        return lambda ctx: {"n": len(list(ctx.input(name).iterdir()))}

    a = Stage("a", lambda ctx: {})
    b = Stage("b", lambda ctx: {}, deps=("a",))
    run_stages(PipelineConfig(), [a, b, Stage("c", reads("a"), deps=("b",), reads=("a",))], tmp_path)
    with pytest.raises(StageContractError, match=r"stage 'd' read stage 'a'.*\['b'\]"):
        run_stages(PipelineConfig(), [a, b, Stage("d", reads("a"), deps=("b",))], tmp_path)
    # a declared read must be upstream: otherwise its key would not enter the reader's key
    with pytest.raises(ValueError, match=r"stage 'e' reads \['x'\], which are not upstream"):
        stage_keys(PipelineConfig(), [a, Stage("x", lambda ctx: {}), Stage("e", lambda ctx: {}, deps=("a",),
                                                                            reads=("x",))])


def test_pipeline_stages_declare_upstream_reads_only():
    from raygen.pipeline import STAGES

    keys = stage_keys(PipelineConfig(), STAGES)  # raises on a read that is not upstream
    assert list(keys) == [s.name for s in STAGES] and len(set(keys.values())) == len(STAGES)


def test_stop_at_leaves_a_stage_unfinished_and_resumable(tmp_path):
    """One ASHA rung: the stage stops at ``stop_step``, stays in .<stage>.tmp without _SUCCESS and no later
    stage runs; a run without stop_at finishes it (the runner writes metrics and marker)."""
    def train(ctx):
        total = 6
        done = min(ctx.stop_step, total) if ctx.stop_step else total
        ctx.partial = done < total
        (ctx.out / "model.txt").write_text(str(done))
        return {"final_step": done}

    calls = []
    st = [Stage("a", lambda ctx: calls.append("a") or {}), Stage("t", train, deps=("a",)),
          Stage("z", lambda ctx: calls.append("z") or {}, deps=("t",))]
    res = run_stages(PipelineConfig(), st, tmp_path, stop_at={"t": 2})
    assert res["t"]["status"] == "partial" and "z" not in res and calls == ["a"]
    out = tmp_path / ".t.tmp"
    assert res["t"]["out"] == str(out) and (out / "model.txt").read_text() == "2"
    assert json.loads((out / "metrics.json").read_text())["final_step"] == 2 and not (out / SUCCESS).exists()
    assert not (tmp_path / "t").exists()
    assert run_stages(PipelineConfig(), st, tmp_path, stop_at={"t": 4})["t"]["metrics"]["final_step"] == 4
    res = run_stages(PipelineConfig(), st, tmp_path)
    assert res["t"]["status"] == "ran" and (tmp_path / "t" / SUCCESS).exists() and calls == ["a", "z"]
    assert (tmp_path / "t" / "model.txt").read_text() == "6" and not out.exists()


def test_link_finished_links_only_stages_finished_with_this_key(tmp_path):
    cfg = PipelineConfig()
    st = [Stage("a", lambda ctx: {}, sections=("data",)), Stage("b", lambda ctx: {}, deps=("a",), sections=("sids",))]
    src = tmp_path / "src"
    run_stages(cfg, st, src)
    other = PipelineConfig()
    other.sids.levels = 5  # b's key changes, a's does not
    dst = tmp_path / "dst"
    assert link_finished(other, st, dst, lambda name, key: src / name) == ["a"]
    assert (dst / "a").is_symlink() and (dst / "a").resolve() == (src / "a").resolve()
    assert not (dst / "b").exists()
    assert link_finished(other, st, dst, lambda name, key: src / name) == []  # never replaces what is there


# --- issue 13: every bad config is a one-line error naming where the value came from ---------


@pytest.mark.parametrize("content,needle", [
    (b"sids:\n  levels: [3\n  codebook_size: 4\n", r"c\.yaml: invalid YAML: .*line \d+"),  # syntax error
    (b"sids:\n\tlevels: 3\n", r"c\.yaml: invalid YAML: .*line 2 column 1"),                         # tab indentation
    (b"sids:\n  device: caf\xe9\n", r"c\.yaml: not UTF-8 text"),                            # Latin-1 byte
    (b"", r"c\.yaml: the config file is empty"),
    (b"# only a comment\n\n", r"c\.yaml: the config file is empty"),
    (b"sids:\n  levels: 3\n  levels: 4\n", r"c\.yaml:3: duplicate key 'sids\.levels'"),
    (b"sids:\n  levels: 3\neval:\n  ks: [1]\nsids:\n  levels: 4\n", r"c\.yaml:5: duplicate key 'sids'"),
    (b"- a list\n", r"c\.yaml: top level must be a mapping"),
])
def test_unreadable_config_files_are_one_line_errors(tmp_path, content, needle):
    p = tmp_path / "c.yaml"
    p.write_bytes(content)
    with pytest.raises(ConfigError, match=needle) as e:
        load_config(p)
    assert "\n" not in str(e.value)


def test_a_directory_as_the_config_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


@pytest.mark.parametrize("override,needle", [
    ("eval.ks=[]", "eval.ks"),
    ("eval.ks=[0]", "eval.ks"),
    ("eval.max_rows=-1", "eval.max_rows"),
    ("eval.batch_size=0", "eval.batch_size"),
    ("eval.resources.count=-1", "eval.resources.count"),
    ("eval.beam_width=0", "eval.beam_width"),
    ("eval.resources.gpus=-1", "eval.resources.gpus"),
    ("eval.resources.cpus=-0.5", "eval.resources.cpus"),
    ("eval.resources.count=1.5", "eval.resources.count"),
    ("eval.resources.colour=1", "eval.resources.colour"),
    ("eval.resources=4", "eval.resources"),
    ("eval.sasrec.epochs=-1", "eval.sasrec.epochs"),
    ("eval.sasrec.lr=0", "eval.sasrec.lr"),
    ("rl.lr=-1", "rl.lr"),
    ("rl.kl_beta=.nan", "rl.kl_beta"),
    ("rl.grad_clip=-1", "rl.grad_clip"),
    ("rl.rollout_resources.cpus=-1", "rl.rollout_resources.cpus"),
    ("rl.rollout_resources.gpus=.nan", "rl.rollout_resources.gpus"),
    ("rl.learner_resources.count=2", "rl.learner_resources.count"),
    ("rl.learner_resources.gpus=1.5", "rl.learner_resources.gpus"),
    ("rl.eval_split=bogus", "rl.eval_split"),
    ("rl.rewards={rule: .inf}", "rl.rewards.rule"),
    ("ray.num_cpus=-4", "ray.num_cpus"),
    ("sft.mode=bogus", "sft.mode"),
    ("sft.lr=.inf", "sft.lr"),
    ("sft.lr=0", "sft.lr must be > 0"),
    ("sft.resources.cpus=0", "sft.resources.cpus must be a whole number >= 1"),
    ("sft.resources.count=0", "sft.resources.count must be >= 1"),
    ("align.resources.cpus=1.5", "align.resources.cpus must be a whole number >= 1"),
    ("align.resources.gpus=-1", "align.resources.gpus must be >= 0"),
    ("align.lr=-1", "align.lr must be > 0"),
    ("align.zero_stage=7", "align.zero_stage must be"),
    ("lm.num_layers=1000", "lm.num_layers"),
    ("sids.kmeans_iters=-3", "sids.kmeans_iters"),
    ("sids.levels=0", "sids.levels"),
    ("sids.codebook_size=1", "sids.codebook_size"),
    ("sids.epochs=0", "sids.epochs"),
    ("sids.lr=0", "sids.lr"),
    ("sids.hidden_dims=[0]", "sids.hidden_dims"),
    ("sids.sinkhorn_epsilon=0", "sids.sinkhorn_epsilon"),
    ("sids.device=gpu", "sids.device"),
    ("sids.n_token_keywords=0", "sids.n_token_keywords"),
    ("corpus.embed_resources.gpus=.nan", "corpus.embed_resources.gpus"),
    ("corpus.keyword_resources.count=0", "corpus.keyword_resources.count"),
    ("tasks.align_ratio=.inf", "tasks.align_ratio"),
    ("stages=[data, bogus]", "stages"),
])
def test_meaningless_values_are_rejected_at_load_time(override, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.").replace("[", r"\[")) as e:
        load_config(None, [override])
    assert str(e.value).startswith(f"command-line override {override!r}: "), str(e.value)


def test_layers_are_checked_against_a_local_model(tiny_model_dir):
    assert load_config(None, [f"lm.model={tiny_model_dir}", "lm.num_layers=2"]).lm.num_layers == 2
    with pytest.raises(ConfigError, match=r"lm\.num_layers: 3 but .* has only 2 layers"):
        load_config(None, [f"lm.model={tiny_model_dir}", "lm.num_layers=3"])


def test_override_errors_name_the_override_and_file_errors_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("sids:\n  levels: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, ["sids.levels=abc"])
    assert str(e.value).startswith("command-line override 'sids.levels=abc': sids.levels: expected an integer")
    assert str(p) not in str(e.value)
    p.write_text("sids:\n  levels: abc\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, ["sids.codebook_size=8"])
    assert str(e.value).startswith(f"{p}: sids.levels: expected an integer")
    with pytest.raises(ConfigError, match=r"^command-line override 'eval.ks=\[': not valid YAML"):
        load_config(None, ["eval.ks=["])


def test_cli_config_errors_exit_2_without_traceback(tmp_path, capsys):
    from raygen.cli import main

    p = tmp_path / "c.yaml"
    p.write_text("sids:\n\tlevels: 3\n")
    assert main(["run", "--config", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raygen: error: ") and "Traceback" not in err and err.count("\n") == 1
    assert main(["run", "--config", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["run", "--config", "configs/default.yaml", "--run-dir", str(tmp_path / "r"),
                 "--stages", "data,bogus"]) == 2
    err = capsys.readouterr().err
    assert "unknown stage(s) ['bogus']" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


# --- issue 13: the runner only ever removes folders raygen created ----------------------------


def test_runner_refuses_to_delete_a_folder_it_did_not_write(tmp_path):
    kept = tmp_path / "a" / "notes.txt"
    kept.parent.mkdir()
    kept.write_text("mine")
    calls = []
    with pytest.raises(RunnerError, match=r"a.* was not written by raygen") as e:
        run_stages(PipelineConfig(), _stages(calls), tmp_path)
    assert "\n" not in str(e.value)
    assert kept.read_text() == "mine" and calls == []  # refused before running anything
    (tmp_path / "b").write_text("a file named like a stage")
    kept.unlink()
    kept.parent.rmdir()
    with pytest.raises(RunnerError, match="was not written by raygen"):
        run_stages(PipelineConfig(), _stages(calls), tmp_path)
    assert (tmp_path / "b").read_text() == "a file named like a stage"


def test_runner_replaces_its_own_folders_marked_or_legacy(tmp_path):
    calls = []
    run_stages(PipelineConfig(), _stages(calls), tmp_path)
    assert (tmp_path / "a" / STAGE_MARKER).exists()
    (tmp_path / "a" / STAGE_MARKER).unlink()  # a folder written before the marker existed: _SUCCESS with a key
    calls.clear()
    run_stages(PipelineConfig(), _stages(calls), tmp_path, force=["a"])
    assert calls == ["a"] and (tmp_path / "a" / STAGE_MARKER).exists()


@pytest.mark.parametrize("content", ["[1, 2]", "{not json", '"a string"', "{}"])
def test_invalid_success_marker_is_not_a_crash(tmp_path, content):
    calls = []
    run_stages(PipelineConfig(), _stages(calls), tmp_path)
    (tmp_path / "b" / SUCCESS).write_text(content)
    calls.clear()
    run_stages(PipelineConfig(), _stages(calls), tmp_path)  # b is not done: it re-runs (c's key is unchanged)
    assert calls == ["b"]
    (tmp_path / "b" / SUCCESS).write_text(content)
    (tmp_path / "b" / STAGE_MARKER).unlink()  # neither marker nor a valid _SUCCESS: not provably raygen's
    with pytest.raises(RunnerError, match="was not written by raygen"):
        run_stages(PipelineConfig(), _stages(calls), tmp_path)


def test_cli_run_dir_that_is_a_file_exits_2(tmp_path, capsys):
    from raygen.cli import main

    (tmp_path / "r").write_text("not a folder")
    assert main(["run", "--config", "configs/default.yaml", "--run-dir", str(tmp_path / "r"), "--stages", "data"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert (tmp_path / "r").read_text() == "not a folder"


def test_cli_refuses_to_replace_a_user_folder_exit_2(tmp_path, capsys, monkeypatch):
    import raygen.ray_utils
    from raygen.cli import main

    monkeypatch.setattr(raygen.ray_utils, "init_ray", lambda cfg=None: None)  # refused before any stage needs Ray
    kept = tmp_path / "data" / "my_notes.txt"
    kept.parent.mkdir()
    kept.write_text("mine")
    assert main(["run", "--config", "configs/default.yaml", "--run-dir", str(tmp_path), "--stages", "data"]) == 2
    err = capsys.readouterr().err
    assert "was not written by raygen" in err and "Traceback" not in err
    assert kept.read_text() == "mine" and sorted(p.name for p in (tmp_path / "data").iterdir()) == ["my_notes.txt"]


def test_yaml_anchors_and_merge_keys_still_load(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("align: &train\n  lr: 0.01\n  batch_size: 4\nsft:\n  <<: *train\n  lr: 0.002\n")
    cfg = load_config(p)
    assert (cfg.align.lr, cfg.sft.lr, cfg.sft.batch_size) == (0.01, 0.002, 4)


def test_loading_a_config_imports_neither_torch_nor_ray():
    """`raygen --help` and config validation stay fast: the config classes live outside the torch modules."""
    import subprocess
    import sys

    code = ("import sys, raygen.config, raygen.pipeline; raygen.config.load_config('configs/default.yaml'); "
            "print(sorted(m for m in ('torch', 'ray', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_keys_older_versions_wrote_are_ignored_with_a_warning(tmp_path, caplog):
    """A run folder's config.yaml from an older raygen still loads (e.g. for `raygen recommend`)."""
    import logging

    p = tmp_path / "config.yaml"
    p.write_text("seed: 3\ntasks:\n  max_len: 64\n  max_history: 7\nrl:\n  max_grad_norm: 0.5\n  lora_targets: [q_proj]\n")
    with caplog.at_level(logging.WARNING, logger="raygen"):
        cfg = load_config(p)
    assert cfg.tasks.max_history == 7 and cfg.rl.grad_clip == 0.5 and cfg.rl.lora_target_modules == ["q_proj"]
    assert "config key 'rl.max_grad_norm' is now 'rl.grad_clip'" in caplog.text
    assert "ignoring removed config key 'seed'" in caplog.text and "'tasks.max_len'" in caplog.text
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(None, ["tasks.max_lenn=3"])


LEGACY_RESOURCES = [  # old key, a value, its new key, the value there
    ("corpus.embed_concurrency", 3, "corpus.embed_resources.count", 3),
    ("corpus.embed_num_cpus", 2.0, "corpus.embed_resources.cpus", 2.0),
    ("corpus.embed_num_gpus", 0.25, "corpus.embed_resources.gpus", 0.25),
    ("corpus.keyword_concurrency", 2, "corpus.keyword_resources.count", 2),
    ("corpus.keyword_num_cpus", 2.0, "corpus.keyword_resources.cpus", 2.0),
    ("corpus.keyword_num_gpus", 1.0, "corpus.keyword_resources.gpus", 1.0),
    ("eval.num_actors", 0, "eval.resources.count", 0),
    ("eval.num_gpus_per_actor", 0.5, "eval.resources.gpus", 0.5),
    ("rl.num_rollout_actors", 3, "rl.rollout_resources.count", 3),
    ("rl.rollout_num_cpus", 0.5, "rl.rollout_resources.cpus", 0.5),
    ("rl.rollout_num_gpus", 0.5, "rl.rollout_resources.gpus", 0.5),
    ("rl.train_workers", 1, "rl.learner_resources.count", 1),
    ("rl.use_gpu", True, "rl.learner_resources.gpus", 1.0),
    ("align.num_workers", 2, "align.resources.count", 2),
    ("align.cpus_per_worker", 2, "align.resources.cpus", 2.0),
    ("align.use_gpu", True, "align.resources.gpus", 1.0),
    ("sft.num_workers", 4, "sft.resources.count", 4),
    ("sft.cpus_per_worker", 2, "sft.resources.cpus", 2.0),
    ("sft.use_gpu", False, "sft.resources.gpus", 0.0),
]


def _get(cfg, dotted: str):
    from operator import attrgetter

    return attrgetter(dotted)(cfg)


def test_every_legacy_resources_key_is_tested():
    from raygen.config import RENAMED_KEYS

    legacy = {old for old, new in RENAMED_KEYS.items() if "resources." in new and not old.startswith("sweep.")}
    assert legacy == {old for old, *_ in LEGACY_RESOURCES}  # the sweep's two: tests/test_tune_sweep_core.py


@pytest.mark.parametrize("old, value, new, expected", LEGACY_RESOURCES)
def test_a_legacy_resources_key_moves_into_its_block_with_a_warning(tmp_path, caplog, old, value, new, expected):
    import logging

    section, leaf = old.split(".")
    p = tmp_path / "config.yaml"
    p.write_text(f"{section}:\n  {leaf}: {json.dumps(value)}\n")
    block = new.rsplit(".", 1)[0]
    defaults = _get(PipelineConfig(), block)
    for source, overrides in ((p, []), (None, [f"{old}={json.dumps(value)}"])):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="raygen"):
            cfg = load_config(source, overrides)
        assert _get(cfg, new) == expected and type(_get(cfg, new)) is type(_get(PipelineConfig(), new))
        # the block's other keys keep the section's defaults (e.g. rl.learner_resources.count stays 0)
        others = {k for k in ("count", "cpus", "gpus") if f"{block}.{k}" != new}
        assert {k: getattr(_get(cfg, block), k) for k in others} == {k: getattr(defaults, k) for k in others}
        assert f"config key {old!r} is now {new!r}" in caplog.text
        assert len([r for r in caplog.records if old in r.getMessage()]) == 1  # one line per key


def test_a_legacy_key_next_to_its_new_key_is_an_error_naming_both(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("eval:\n  num_actors: 2\n  resources: {count: 3}\n")
    with pytest.raises(ConfigError, match=rf"^{p}: eval\.num_actors is the old name of eval\.resources\.count; "
                                          "give only one"):
        load_config(p)
    p.write_text("sft:\n  use_gpu: true\n  resources:\n    gpus: 1\n")
    with pytest.raises(ConfigError, match=r"sft\.use_gpu is the old name of sft\.resources\.gpus"):
        load_config(p)
    with pytest.raises(ConfigError, match=r"^command-line overrides 'rl\.num_rollout_actors=2' and "
                                          r"'rl\.rollout_resources\.count=3': rl\.num_rollout_actors is the old name "
                                          r"of rl\.rollout_resources\.count"):
        load_config(None, ["rl.num_rollout_actors=2", "rl.rollout_resources.count=3"])
    with pytest.raises(ConfigError, match=r"^command-line override 'sft=\{.*\}': sft\.cpus_per_worker is the old "
                                          r"name of sft\.resources\.cpus"):
        load_config(None, ["sft={cpus_per_worker: 2, resources: {cpus: 2}}"])


def test_the_command_line_wins_over_the_file_across_old_and_new_keys(tmp_path):
    """An old run folder's config.yaml holds every old key: a new-style override still applies (and an old
    one over a new file): the file's keys are upgraded before the overrides."""
    p = tmp_path / "config.yaml"
    p.write_text("eval:\n  num_actors: 1\n  num_gpus_per_actor: 0.0\nsft:\n  use_gpu: false\n")
    cfg = load_config(p, ["eval.resources.count=2", "sft.resources.gpus=1"])
    assert (cfg.eval.resources.count, cfg.sft.resources.gpus) == (2, 1.0)
    p.write_text("eval:\n  resources: {count: 1, gpus: 0.5}\n")
    cfg = load_config(p, ["eval.num_actors=3"])
    assert cfg.eval.resources == Resources(count=3, cpus=1.0, gpus=0.5)


def test_legacy_values_are_checked_under_the_key_given():
    with pytest.raises(ConfigError, match=r"^command-line override 'sft\.use_gpu=2': sft\.use_gpu: expected "
                                          "true/false, got 2"):
        load_config(None, ["sft.use_gpu=2"])
    with pytest.raises(ConfigError, match=r"^command-line override 'eval\.num_actors=-1': eval\.resources\.count "
                                          "must be >= 0"):
        load_config(None, ["eval.num_actors=-1"])


def test_a_resources_block_given_in_part_keeps_the_sections_defaults(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("rl:\n  learner_resources: {gpus: 0.5}\ncorpus:\n  embed_resources: {count: 2}\n")
    cfg = load_config(p, ["sft.resources.count=2"])
    assert cfg.rl.learner_resources == Resources(count=0, cpus=1.0, gpus=0.5)  # still in the driver
    assert cfg.corpus.embed_resources == Resources(count=2, cpus=0.0, gpus=0.0)  # cpus still auto
    assert cfg.sft.resources == Resources(count=2, cpus=1.0, gpus=0.0)


def test_an_old_run_folders_config_yaml_loads_to_the_same_config(tmp_path, caplog):
    """Every resources key an older raygen dumped (its config.yaml holds each field) lands in the blocks."""
    import logging

    import yaml

    from raygen.configbase import to_dict

    cfg = load_config("configs/gpu.yaml")
    old = to_dict(cfg)
    for section, block, flat in [
        ("corpus", "embed_resources", {"count": "embed_concurrency", "cpus": "embed_num_cpus",
                                       "gpus": "embed_num_gpus"}),
        ("corpus", "keyword_resources", {"count": "keyword_concurrency", "cpus": "keyword_num_cpus",
                                         "gpus": "keyword_num_gpus"}),
        ("eval", "resources", {"count": "num_actors", "gpus": "num_gpus_per_actor"}),
        ("rl", "rollout_resources", {"count": "num_rollout_actors", "cpus": "rollout_num_cpus",
                                     "gpus": "rollout_num_gpus"}),
        ("rl", "learner_resources", {"count": "train_workers", "gpus": "use_gpu"}),
        ("align", "resources", {"count": "num_workers", "cpus": "cpus_per_worker", "gpus": "use_gpu"}),
        ("sft", "resources", {"count": "num_workers", "cpus": "cpus_per_worker", "gpus": "use_gpu"}),
    ]:
        res = old[section].pop(block)
        for key, name in flat.items():
            old[section][name] = bool(res[key]) if name == "use_gpu" else res[key]
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(old))
    with caplog.at_level(logging.WARNING, logger="raygen"):
        assert load_config(p) == cfg
    assert caplog.text.count("is now") == 19
