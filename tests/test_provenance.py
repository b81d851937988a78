"""Result files say where their figures came from (raygen.provenance), and benchmarks run as a package."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from raygen.provenance import cpu_kind, provenance, write_result

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_kind_names_the_fastest_bf16_path():
    assert cpu_kind({"avx2", "avx512_bf16", "amx_bf16"}) == "amx"
    assert cpu_kind({"avx2", "avx512_bf16"}) == "avx512_bf16"
    assert cpu_kind({"avx2", "fma"}) == "avx2"
    assert cpu_kind(set()) == "other"


def test_stamp_has_commit_machine_versions_and_date():
    stamp = provenance(command="python -m benchmarks.x --out y")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert stamp["commit"] == head.stdout.strip()
        assert isinstance(stamp["dirty"], bool)
    assert stamp["command"] == "python -m benchmarks.x --out y"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", stamp["date"])
    assert stamp["machine"]["cores"] and stamp["machine"]["cpu_kind"] in ("amx", "avx512_bf16", "avx2", "other")
    assert {"python", "raygen", "pyarrow"} <= set(stamp["versions"])


def test_write_result_stamps_and_keeps_an_existing_stamp(tmp_path):
    write_result(tmp_path / "a.json", {"ndcg@10": 0.1}, command="cmd a")
    a = json.loads((tmp_path / "a.json").read_text())
    assert a["ndcg@10"] == 0.1 and a["provenance"]["command"] == "cmd a"
    write_result(tmp_path / "b.json", a, command="cmd b")  # a report rebuilt from a kept result
    assert json.loads((tmp_path / "b.json").read_text())["provenance"] == a["provenance"]


def test_benchmark_scripts_do_not_edit_sys_path_and_stamp_their_results():
    scripts = sorted((ROOT / "benchmarks").glob("*.py"))
    assert scripts
    for path in scripts:
        text = path.read_text()
        assert "sys.path.insert" not in text, f"{path.name} edits sys.path: run it as python -m benchmarks.{path.stem}"
        assert not re.search(r"write_json\((a|args)\.out\b", text), f"{path.name} writes its result without provenance"


def test_a_benchmark_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "benchmarks.quality", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage" in out.stdout
