"""benchmarks/beam_width.py: a kept model scored at several beam widths on the same valid and test rows."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def test_beam_widths_on_a_kept_model(tmp_path, tiny_model_dir, tiny_run_dir):
    train = [sys.executable, "-m", "benchmarks.quality_local", "--model-dir", str(tiny_model_dir), "--run",
             str(tiny_run_dir), "--variants", "mean", "--seeds", "0", "--epochs", "1", "--max-steps", "2",
             "--batch-size", "2", "--valid-every", "0", "--eval-batch", "16", "--train-only",
             "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "q.json"),
             "--checkpoint-dir", str(tmp_path / "ck"), "--save-models", str(tmp_path / "models")]
    done = subprocess.run(train, capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "beam.json"
    cmd = [sys.executable, "-m", "benchmarks.beam_width", "--model", str(tmp_path / "models" / "mean-s0"),
           "--run", str(tiny_run_dir), "--widths", "10,12", "--eval-batch", "8", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads(out.read_text())
    assert set(res["splits"]) == {"valid", "test"} and res["provenance"]["commit"] is not None
    for per in res["splits"].values():
        assert set(per) == {"10", "12"}
        assert per["10"]["n_rows"] == per["12"]["n_rows"] > 0
        assert "vs_first" in per["12"] and "vs_first" not in per["10"]
        assert 0.0 <= per["12"]["ndcg@10"] <= 1.0
    assert "| test | 12 |" in out.with_suffix(".md").read_text()
