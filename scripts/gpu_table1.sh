#!/usr/bin/env bash
# Table 1's two nets in one GPU call, at equal budgets: GLRL (3 LRBs) and GLRL-2LRB, each run packed by
# gpu_slice.sh.
#
#   scripts/gpu_table1.sh OUT SECONDS [glrl train options for both]
#   e.g. GLRL_DATA=work/pack BENCH=1 TOGETHER=1 scripts/gpu_table1.sh "$OUT" 540 --scale 234 \
#          --schedule gpu-60k --optimizer adam --device cuda --precision tf32
#
# OUT/glrl/ and OUT/glrl-2lrb/ receive each run's run.tar and slice.log.
#
# First the patch set is built where missing (OUT/data-build.log; all cores but four; `glrl data build`
# options in BUILD_ARGS). BENCH=1 runs the GPU benchmarks meanwhile (bench/run.py --sections gpu, within
# BENCH_BUDGET seconds if set, only the modes GPU_MODES names (comma-separated) if set, $BENCH_ARGS; tables
# in OUT/bench/).
#
# Then, by default, one after the other: GLRL trains for FIRST_SHARE (default 0.55; a 2-LRB iteration costs
# 0.68 of a 3-LRB one on a CPU, and each slice spends seconds starting) of the SECONDS left, and GLRL-2LRB to
# the iteration GLRL reached in what is left. TOGETHER=1 trains both at once on the one GPU instead, each
# until the time is up or iteration STOP_AT: at batch 32 a step is hundreds of small kernels launched from
# one CPU thread, so one process leaves the GPU mostly idle and two share it at no cost to either (an H200:
# GLRL 58-66 iterations/s alone and beside GLRL-2LRB, docs/gpu-slices.md). STOP_AT (in this call or a later
# one) brings the two to the same iteration.
#
# RUN_TAR_GLRL and RUN_TAR_2LRB continue runs an earlier call packed. WEIGHTS_GLRL and WEIGHTS_2LRB start a
# net's new run from those weights instead (glrl train --weights: a second stage, e.g. the released models
# fine-tuned with --schedule gpu-finetune --batch-size 128; ignored where that net's RUN_TAR is set, since a
# resumed run has its weights). Other variables: gpu_slice.sh.
set -uo pipefail
if [ $# -lt 2 ]; then echo "usage: $0 OUT SECONDS [glrl train options]" >&2; exit 2; fi
out=$1 seconds=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
export PYTHONPATH="$here/../python${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export GLRL_WORK=${GLRL_WORK:-/tmp/glrl-work}
start=$(date +%s)
mkdir -p "$out" || exit 2

scale=3 previous=
for arg in "$@"; do  # the patch set the training options ask for
  [ "$previous" = --scale ] && scale=$arg
  case $arg in --scale=*) scale=${arg#--scale=} ;; esac
  previous=$arg
done

missing=$(python3 -c "import sys; from glrl import settings; from glrl.data_prep import manifest
from glrl.data_prep.config import parse_scales, scale_name
print(int(manifest.load(settings.work_dir() / 'data' / scale_name(parse_scales(sys.argv[1]), 'vdsr')) is None))" \
  "$scale") || exit 2
build=()
if [ "$missing" = 1 ]; then  # built here, not by two glrl train processes at once
  workers=$(( $(nproc) - 4 ))
  [ "$workers" -lt 1 ] && workers=1
  build=(python3 -m glrl data build --scale "$scale" --workers "$workers" --quiet ${BUILD_ARGS:-})
fi
if [ "${BENCH:-0}" = 1 ]; then
  [ "$missing" = 1 ] && { "${build[@]}" >"$out/data-build.log" 2>&1 & }
  python3 "$here/../bench/run.py" --sections gpu --out "$out/bench" --name gpu \
    ${BENCH_BUDGET:+--gpu-budget "$BENCH_BUDGET"} ${GPU_MODES:+--gpu-modes "$GPU_MODES"} ${BENCH_ARGS:-} \
    || echo "warning: the GPU benchmarks failed"
  wait
elif [ "$missing" = 1 ]; then
  "${build[@]}" >"$out/data-build.log" 2>&1
fi
if [ "$missing" = 1 ]; then
  tail -n 2 "$out/data-build.log"
  grep -q "^built in" "$out/data-build.log" || echo "warning: the patch-set build failed (data-build.log)"
fi

start_glrl=() start_2lrb=()  # where each net's new run starts from (default: its fillers)
[ -z "${RUN_TAR_GLRL:-}" ] && [ -n "${WEIGHTS_GLRL:-}" ] && start_glrl=(--weights "$WEIGHTS_GLRL")
[ -z "${RUN_TAR_2LRB:-}" ] && [ -n "${WEIGHTS_2LRB:-}" ] && start_2lrb=(--weights "$WEIGHTS_2LRB")

newest_iteration() {  # the iteration of the snapshot a run.tar holds
  python3 -c "import sys; from glrl.train.snapshot import packed_iteration; print(packed_iteration(sys.argv[1]))" "$1"
}

if [ "${TOGETHER:-0}" = 1 ]; then
  left=$(( seconds - ($(date +%s) - start) ))
  stop=()
  [ -n "${STOP_AT:-}" ] && stop=(--stop-at "$STOP_AT")
  RUN=glrl RUN_TAR=${RUN_TAR_GLRL:-} "$here/gpu_slice.sh" "$out/glrl" "$left" --net glrl "$@" "${stop[@]}" \
    "${start_glrl[@]}" >/dev/null &
  glrl=$!
  RUN=glrl-2lrb RUN_TAR=${RUN_TAR_2LRB:-} "$here/gpu_slice.sh" "$out/glrl-2lrb" "$left" --net glrl-2lrb "$@" \
    "${stop[@]}" "${start_2lrb[@]}" >/dev/null &
  two=$!
  wait "$glrl"; first_status=$?
  wait "$two"; second_status=$?
  tail -n 4 "$out/glrl/slice.log" "$out/glrl-2lrb/slice.log"
  [ "$first_status" -eq 0 ] || exit "$first_status"
  [ "$second_status" -eq 0 ] || exit "$second_status"
  reached=$(newest_iteration "$out/glrl/run.tar") || exit 2
  second=$(newest_iteration "$out/glrl-2lrb/run.tar") || exit 2
  echo "GLRL at iteration $reached, GLRL-2LRB at iteration $second$([ "$second" = "$reached" ] || echo \
    ' (not equal: STOP_AT with RUN_TAR_GLRL and RUN_TAR_2LRB brings them to one iteration)')"
  exit 0
fi

first=$(python3 -c "print(int(($seconds - $(date +%s) + $start) * ${FIRST_SHARE:-0.55}))") || exit 2
RUN=glrl RUN_TAR=${RUN_TAR_GLRL:-} "$here/gpu_slice.sh" "$out/glrl" "$first" --net glrl "$@" "${start_glrl[@]}" || exit $?
reached=$(newest_iteration "$out/glrl/run.tar") || exit 2
left=$(( seconds - ($(date +%s) - start) ))
RUN=glrl-2lrb RUN_TAR=${RUN_TAR_2LRB:-} "$here/gpu_slice.sh" "$out/glrl-2lrb" "$left" --net glrl-2lrb "$@" \
  --stop-at "$reached" "${start_2lrb[@]}" || exit $?
second=$(newest_iteration "$out/glrl-2lrb/run.tar") || exit 2
echo "GLRL at iteration $reached, GLRL-2LRB at iteration $second$([ "$second" = "$reached" ] || echo \
  ' (not equal: give the 2-LRB run more time, RUN_TAR_2LRB continues it)')"
