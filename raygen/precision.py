"""Choose bf16 or fp32 from the hardware (the ``bf16: auto`` setting of the train and eval configs).

bf16 pays off on CUDA GPUs that support it and on CPUs with native bf16 arithmetic (x86 AVX512-BF16
or AMX-BF16, Arm's BF16 extension); elsewhere torch emulates it and bf16 autocast is slower than fp32.
``RAYGEN_CPU_BF16=0|1`` overrides the CPU detection (tests, or a CPU the detection gets wrong).
Pure torch, no Ray: call it where the work runs (a Ray worker may sit on another kind of machine).
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Literal, Union

import torch

Bf16Setting = Union[Literal["auto"], bool]
"""The type of a ``bf16`` config field: 'auto' (choose from the hardware), true or false."""

ENV_CPU_BF16 = "RAYGEN_CPU_BF16"
_CPUINFO_FLAGS = ("avx512_bf16", "amx_bf16")


def _env_override() -> bool | None:
    raw = os.environ.get(ENV_CPU_BF16, "").strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    if raw:
        raise ValueError(f"{ENV_CPU_BF16}={raw!r}: use 0 or 1")
    return None


def _cpuinfo_flags(path: str = "/proc/cpuinfo") -> set[str] | None:
    """CPU flags (x86 'flags', Arm 'Features') of the first CPU in /proc/cpuinfo; None if unreadable."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def cpu_native_bf16() -> bool:
    """True when this process's CPU does bf16 natively (AVX512-BF16, AMX-BF16 or Arm BF16).

    Order: the ``RAYGEN_CPU_BF16`` override; torch's own CPU probes; /proc/cpuinfo flags on Linux;
    False (slow emulated bf16 is the safe assumption) when nothing tells.
    """
    override = _env_override()
    if override is not None:
        return override
    probes = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        if any(p() for p in probes if p is not None):
            return True
    except Exception:  # private torch API: never let a probe break a run
        pass
    try:
        capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    except Exception:
        capability = ""
    if capability in ("DEFAULT", "AVX2", "VSX", "ZVECTOR") and platform.machine().lower() in ("x86_64", "amd64"):
        return False  # the kernels torch dispatches to have no AVX512, so no AVX512-BF16 either
    flags = _cpuinfo_flags() if platform.system() == "Linux" else None
    if flags is None:
        return False
    if any(f in flags for f in _CPUINFO_FLAGS):
        return True
    return platform.machine().lower() in ("aarch64", "arm64") and "bf16" in flags


def check_setting(value, key: str = "bf16") -> None:
    """ConfigError unless ``value`` is 'auto', True or False (for config ``validate`` methods)."""
    from raygen.configbase import check_bf16

    check_bf16(value, key)


def resolve_bf16(setting: Bf16Setting, device: str | torch.device) -> tuple[bool, str]:
    """``(use_bf16, reason)`` for ``setting`` ('auto', True or False) on ``device``.

    'auto' = bf16 on a CUDA device that supports it and on a CPU with native bf16, fp32 otherwise.
    True is honoured everywhere (on a CPU without native bf16 the reason says it will be slow).
    """
    check_setting(setting)
    dev = torch.device(device)
    if dev.type == "cuda":
        try:
            ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        except Exception:
            ok = False
        where, native = "CUDA device " + ("with" if ok else "without") + " bf16 support", ok
    elif dev.type == "cpu":
        native = cpu_native_bf16()
        where = "CPU with native bf16" if native else "CPU without AVX512-BF16/AMX"
        if _env_override() is not None:  # the record must say the CPU was not probed
            where = f"CPU treated as {'having' if native else 'lacking'} native bf16 ({ENV_CPU_BF16}={os.environ[ENV_CPU_BF16]})"
    else:  # mps, xpu, ...: bf16 is only used when asked for
        native, where = False, f"{dev.type} device (bf16 not auto-selected)"
    if setting is False:
        return False, f"bf16: false -> fp32 on {where}"
    if setting is True:
        slow = "" if native or dev.type != "cpu" else " (emulated: slower than fp32)"
        return True, f"bf16: true -> bf16 on {where}{slow}"
    return native, f"auto: {where} -> {'bf16' if native else 'fp32'}"


def engine_dtype(setting: Bf16Setting = "auto", device: str | torch.device | None = None,
                 dtype: str | None = None) -> tuple[str, str]:
    """``(dtype, reason)`` for the weights of an inference engine (vLLM, the HF keyword teacher): ``dtype``
    when the caller fixed one, else 'bfloat16' where :func:`resolve_bf16` picks bf16 on ``device`` (default:
    CUDA if torch sees it, else the CPU), 'float32' elsewhere. vLLM's own ``dtype='auto'`` takes the
    checkpoint's dtype instead (bf16 for SmolLM2), which on a CPU without native bf16 is several times slower
    than fp32 (``benchmarks/vllm_dtype.py``)."""
    if dtype is not None:
        return dtype, f"dtype={dtype!r} given"
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    use, reason = resolve_bf16(setting, device)
    return ("bfloat16" if use else "float32"), reason
