#!/usr/bin/env bash
# Long benchmarks on a small box. Each LANE file lists commands (one per line; '#' starts a comment), run one
# after another; the lanes run side by side, each command with 1 torch thread at nice 5, from the repository
# root. The code they run is a frozen snapshot of HEAD (a detached worktree under runs/lanes/, exported as
# $CODE: write `.venv/bin/python $CODE/benchmarks/x.py ...`), so editing the checkout while they run cannot
# break their later imports; relative output paths still land in the checkout. The benchmarks keep every
# finished run and reuse it, so a lane cut short (a session ending) is simply started again.
#   setsid nohup scripts/run_lanes.sh benchmarks/lanes/industrial_a.txt benchmarks/lanes/industrial_b.txt &
# Logs: runs/lanes/<lane name>.log (a start and an end line with the exit code around each command's output).
set -u
cd "$(dirname "$0")/.."
for lane in "$@"; do
  [ -f "$lane" ] || { echo "run_lanes: no lane file $lane" >&2; exit 2; }
done
mkdir -p runs/lanes
CODE="$PWD/runs/lanes/code-$(git rev-parse --short HEAD)"
# Snapshots no running lane uses (no process has it as $CODE) are spent: remove them (each is a checkout).
for old in runs/lanes/code-*; do
  [ -d "$old" ] && [ "$PWD/$old" != "$CODE" ] || continue
  grep -qsz "^CODE=$PWD/$old\$" /proc/[0-9]*/environ || git worktree remove --force "$old" > /dev/null 2>&1
done
[ -d "$CODE" ] || git worktree add --detach "$CODE" HEAD > /dev/null 2>&1
export CODE
for lane in "$@"; do
  log="runs/lanes/$(basename "$lane" .txt).log"
  (
    while IFS= read -r cmd || [ -n "$cmd" ]; do
      case "$cmd" in ''|'#'*) continue ;; esac
      echo "=== $(date -u +%FT%TZ) start: $cmd" >> "$log"
      OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH="$CODE" nice -n 5 bash -c "$cmd" >> "$log" 2>&1
      rc=$?
      echo "=== $(date -u +%FT%TZ) end rc=$rc: $cmd" >> "$log"
    done < "$lane"
  ) &
done
wait
