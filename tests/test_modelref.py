"""Model references between stages survive moving the run folder."""
import json
import shutil

import pytest

from raygen.modelref import model_dir, pass_through, write_ref


def _fake_model(d):
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")


def test_pass_through_is_relative_and_survives_a_move(tmp_path):
    run = tmp_path / "run"
    _fake_model(run / "lm" / "model")
    (run / ".align.tmp").mkdir()
    pass_through(run / ".align.tmp", run / "lm", "disabled")
    (run / ".align.tmp").rename(run / "align")
    ref = json.loads((run / "align" / "model_ref.json").read_text())
    assert ref["model_dir"] == "lm/model"
    assert model_dir(run / "align").resolve() == (run / "lm" / "model").resolve()
    # chained references resolve too (sft -> align -> lm)
    (run / ".sft.tmp").mkdir()
    pass_through(run / ".sft.tmp", run / "align", "disabled")
    (run / ".sft.tmp").rename(run / "sft")
    moved = tmp_path / "elsewhere"
    shutil.move(str(run), str(moved))
    assert model_dir(moved / "sft").resolve() == (moved / "lm" / "model").resolve()


def test_model_outside_the_run_stays_absolute(tmp_path):
    _fake_model(tmp_path / "shared" / "model")
    (tmp_path / "run" / "align").mkdir(parents=True)
    write_ref(tmp_path / "run" / "align", tmp_path / "shared" / "model", "reused")
    ref = json.loads((tmp_path / "run" / "align" / "model_ref.json").read_text())
    assert ref["model_dir"] == str((tmp_path / "shared" / "model").absolute())
    assert model_dir(tmp_path / "run" / "align") == tmp_path / "shared" / "model"


def test_missing_model_is_a_clear_error(tmp_path):
    (tmp_path / "sft").mkdir()
    with pytest.raises(FileNotFoundError, match="neither model"):
        model_dir(tmp_path / "sft")
