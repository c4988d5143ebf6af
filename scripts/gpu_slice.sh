#!/usr/bin/env bash
# One slice of a GPU machine's time, for machines lent for minutes and returned bare (the device tool of
# docs/gpu-slices.md): restore the run the previous slice packed, train until the slice is nearly over (the
# patch set is built first where missing; a `glrl data pack` root travels with the code), pack the run for
# the next slice.
#
#   scripts/gpu_slice.sh OUT SECONDS [glrl train options]
#
# OUT receives run.tar (the run folder with its newest snapshot only; pass it back as RUN_TAR to continue)
# and slice.log (this slice's output).
# Environment: GLRL_DATA (the data root), RUN_TAR, RUN (the run folder's name, default "run"),
# MARGIN (seconds kept for packing, default 45), GLRL_WORK (default /tmp/glrl-work).
set -uo pipefail
if [ $# -lt 2 ]; then echo "usage: $0 OUT SECONDS [glrl train options]" >&2; exit 2; fi
out=$1 seconds=$2
shift 2
start=$(date +%s)
repo=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$repo/python${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export GLRL_WORK=${GLRL_WORK:-/tmp/glrl-work}
run_dir=$GLRL_WORK/runs/${RUN:-run}
mkdir -p "$out" "$GLRL_WORK/runs" || exit 2
log=$out/slice.log
exec > >(tee -a "$log") 2>&1

resume=()
if [ -n "${RUN_TAR:-}" ]; then
  rm -rf "$run_dir" && mkdir -p "$run_dir" && tar -xf "$RUN_TAR" -C "$run_dir" || { echo "cannot unpack $RUN_TAR"; exit 2; }
  resume=(--resume)
fi
left=$(( seconds - ($(date +%s) - start) - ${MARGIN:-45} ))
[ "$left" -lt 0 ] && left=0
echo "training for at most $left s: glrl train --run-dir $run_dir ${resume[*]} $*"
python3 -m glrl train --run-dir "$run_dir" --no-progress --time-limit "$left" "${resume[@]}" "$@"
status=$?

python3 -c "import sys; from pathlib import Path; from glrl.train.snapshot import pack_run
state = pack_run(Path(sys.argv[1]), Path(sys.argv[2]))
print(f'packed {sys.argv[1]} (newest snapshot {state.name}) into {sys.argv[2]}')" "$run_dir" "$out/run.tar" \
  || { [ "$status" -eq 0 ] && status=2; }
echo "slice done in $(( $(date +%s) - start )) s, status $status"
exit $status
