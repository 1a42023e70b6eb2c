#!/usr/bin/env bash
# One device call (H100 or H200) for the bulk kernel's two open candidates
# (benchmarks/results/qmm_h200_notes.md, "Session 29"):
# - the producer warp, a patch (benchmarks/tools/patches/bulk_producer_warp.patch,
#   MLX_KERNELS_QMM_BULK_PRODUCER=1): it changes the default kernels' code too,
#   so the patched build's defaults are timed against main's;
# - the push of the split-K partial sums (MLX_KERNELS_QMM_BULK_PUSH=1, on main).
# Before the call, in the checkout that makes it:
#   git apply benchmarks/tools/patches/bulk_producer_warp.patch
#   bash benchmarks/tools/make-base-tree.sh HEAD .basetree
# and carry [".kit", ".whl", ".basetree"]; on the device, from the repo root:
#   bash benchmarks/tools/bulk_candidates_call.sh      (~520 s of command)
# Steps, each one's results under $OUT as soon as it ends (a call cut short
# still brings back what was measured):
#  1. builds: main (.basetree, into /tmp/projbase) and this tree (/tmp/proj);
#  2. traces (trace_qmm_bulk.py) of this tree's defaults, the producer and the
#     push: when the first ring fill was issued (word 7), when the cluster
#     barrier passed (word 8), the tail after it;
#  3. ncu A/B of 24 cases (candidates_ab.sh): main, this tree's defaults, the
#     producer, the push, main again;
#  4. parity (long-K, large-decode, trace and plan tests) with the producer,
#     then with the push, in what is left of DEADLINE seconds (default 560).
# For the CPU test (tests/test_bench_scripts.py): RUNNER and AB replace
# "bash benchmarks/run_h200.sh" and "bash benchmarks/tools/candidates_ab.sh".
set -u
T0=$(date +%s)
FINAL=${OUT:-/tmp/out}
RUNNER=${RUNNER:-bash benchmarks/run_h200.sh}
AB=${AB:-bash benchmarks/tools/candidates_ab.sh}
DEADLINE=${DEADLINE:-560}
PRODUCER=MLX_KERNELS_QMM_BULK_PRODUCER=1
PUSH=MLX_KERNELS_QMM_BULK_PUSH=1
BASE="PROJ_PYTHONPATH=/tmp/projbase:/tmp/site"
CASES="--dtypes=float16,bfloat16 --mvalues=1,4,8 --shapes=14336x4096,4096x14336,128256x4096,151936x1024"
TESTS="test_quantized_matmul.py test_trace_qmm_bulk.py test_cuda_qmm_plan.py"
mkdir -p "$FINAL"
left() { echo $(( DEADLINE - ($(date +%s) - T0) )); }

echo "== builds and the defaults' trace"
OUT=$FINAL/build PACK=1 STAGES="basebuild build trace" BASE_TREE=.basetree $RUNNER \
    > "$FINAL/build.log" 2>&1
tail -25 "$FINAL/build.log"
for setting in "$PRODUCER" "$PUSH"; do
  echo "== trace with $setting"
  # shellcheck disable=SC2086
  (export $setting; OUT=$FINAL/trace_${setting%%=*} PACK=1 STAGES=trace $RUNNER 2>&1 \
      | tail -25)
done
echo "== A/B, then the producer's parity ($(left) s left)"
OUT=$FINAL/ab SKIP_BUILD=1 QMM_SETTINGS="$BASE;-;$PRODUCER;$PUSH;$BASE" QMM_ARGS="$CASES" TUNE_T=60 \
    TEST_ENV="$PRODUCER" TEST_FILES="$TESTS" TEST_K="long_k or large_decode or trace or producer" \
    DEADLINE=$(( $(left) - 100 )) $AB
t=$(left)
if [ "$t" -gt 40 ]; then
  echo "== the push's parity, $t s"
  OUT=$FINAL/push_tests STAGES=test TEST_T=$t TEST_ENV="$PUSH" TEST_FILES="$TESTS" \
      TEST_K="long_k or large_decode or trace or push" $RUNNER 2>&1 | tail -15
fi
echo "== done in $(( $(date +%s) - T0 )) s"
