#!/usr/bin/env bash
# Table 1's two nets in one GPU call, at equal budgets: GLRL (3 LRBs) trains for a share of SECONDS, then
# GLRL-2LRB trains to the iteration GLRL reached in what is left; each run is packed by gpu_slice.sh.
#
#   scripts/gpu_table1.sh OUT SECONDS [glrl train options for both]
#   e.g. GLRL_DATA=work/pack scripts/gpu_table1.sh "$OUT" 540 --scale 234 --schedule gpu-60k \
#          --optimizer adam --device cuda --precision tf32
#
# OUT/glrl/ and OUT/glrl-2lrb/ receive each run's run.tar and slice.log. FIRST_SHARE (default 0.55; a 2-LRB
# iteration costs 0.68 of a 3-LRB one on a CPU, each slice spends seconds starting, and the first run
# also builds the patch set) is GLRL's share of
# the SECONDS left after the benchmarks. BENCH=1 runs the GPU benchmarks first (bench/run.py --sections gpu
# $BENCH_ARGS; tables in OUT/bench/). RUN_TAR_GLRL and RUN_TAR_2LRB continue runs an earlier call packed.
# Other variables: gpu_slice.sh.
set -uo pipefail
if [ $# -lt 2 ]; then echo "usage: $0 OUT SECONDS [glrl train options]" >&2; exit 2; fi
out=$1 seconds=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
export PYTHONPATH="$here/../python${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
start=$(date +%s)
if [ "${BENCH:-0}" = 1 ]; then
  python3 "$here/../bench/run.py" --sections gpu --out "$out/bench" --name gpu ${BENCH_ARGS:-} \
    || echo "warning: the GPU benchmarks failed"
fi
first=$(python3 -c "print(int(($seconds - $(date +%s) + $start) * ${FIRST_SHARE:-0.55}))") || exit 2

newest_iteration() {  # the iteration of the snapshot a run.tar holds
  python3 -c "import sys; from glrl.train.snapshot import packed_iteration; print(packed_iteration(sys.argv[1]))" "$1"
}

RUN=glrl RUN_TAR=${RUN_TAR_GLRL:-} "$here/gpu_slice.sh" "$out/glrl" "$first" --net glrl "$@" || exit $?
reached=$(newest_iteration "$out/glrl/run.tar") || exit 2
left=$(( seconds - ($(date +%s) - start) ))
RUN=glrl-2lrb RUN_TAR=${RUN_TAR_2LRB:-} "$here/gpu_slice.sh" "$out/glrl-2lrb" "$left" --net glrl-2lrb "$@" \
  --stop-at "$reached" || exit $?
second=$(newest_iteration "$out/glrl-2lrb/run.tar") || exit 2
echo "GLRL at iteration $reached, GLRL-2LRB at iteration $second$([ "$second" = "$reached" ] || echo \
  ' (not equal: give the 2-LRB run more time, RUN_TAR_2LRB continues it)')"
