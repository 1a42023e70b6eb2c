#!/usr/bin/env bash
# One device call: build, then the A/B of the candidates that are off by
# default, each against the defaults measured twice in the same lease (first
# and last), with ncu kernel times (benchmarks/run_h200.sh stages attnncu and
# tune), and the per-case comparisons printed at the end.
#   bash benchmarks/tools/candidates_ab.sh            (on the device, repo root)
# ATTN_SETTINGS: ';'-separated settings for the attention decode grid, each a
# list of VAR=VALUE ("-" = defaults); the first and last should be "-"
# (unset or empty: no attention runs).
# QMM_SETTINGS / QMM_ARGS: the same for the qmm tune stage (TUNE_SETTINGS /
# TUNE_ARGS of run_h200.sh). SKIP_BUILD=1 reuses /tmp/proj of a warm machine.
# Session 22 ran session 20's three candidates through it, e.g.
#   ATTN_SETTINGS="-;MLX_KERNELS_ATTN_FUSED_MERGE=1;-" QMM_SETTINGS="-;MLX_KERNELS_QMM_SIMT_MAX_KB=1536;-"
# (benchmarks/results/candidates_h100_s22_ab.log; the attention knobs are gone).
# Two builds instead of a knob (session 23): build the base tree next to
# today's first (run_h200.sh STAGES="basebuild build" BASE_TREE=.basetree, see
# make-base-tree.sh), then SKIP_BUILD=1 and
#   ATTN_SETTINGS="PROJ_PYTHONPATH=/tmp/projbase:/tmp/site;-;PROJ_PYTHONPATH=/tmp/projbase:/tmp/site"
# so that today's build is the middle run, compared with the base run twice
# (benchmarks/results/attn_combine_h100_s23_ab.log; its "defaults" labels
# then name today's build, its "base" the base runs). QMM_SETTINGS take the
# same three settings (run_h200.sh's tune stage reads a setting's
# PROJ_PYTHONPATH since session 24; before, that A/B timed today's build only).
# QMM_WARM_T: seconds for run_h200.sh's warm-up before the tune runs (default
# 0, none). On a fresh machine with M > 8 in QMM_ARGS give it 150: MLX
# JIT-compiles its M > 8 kernels at their first call (30-35 s a dtype), which
# in session 27 ran the first tune (the base) past TUNE_T=60 with no results.
# TEST_FILES (optional): after the A/Bs, the parity files with TEST_ENV (the
# candidates on), given what is left of DEADLINE seconds (default 550) from
# the script's start, so that the results still come back in a 600 s call.
# For the CPU test (tests/test_bench_scripts.py): RUNNER replaces
# "bash benchmarks/run_h200.sh", AB_WORK the work folder, PYTHON python3, and
# COMPARE_PYTHONPATH (default the device's /tmp/proj:/tmp/site) the compare
# steps' PYTHONPATH ("" keeps the caller's).
set -u
T0=$(date +%s)
# Work under /tmp/ab; $OUT holds only out.tgz, refreshed after each step, so
# that a call cut short still brings back what was measured (one file).
FINAL=${OUT:-/tmp/out}
O=${AB_WORK:-/tmp/ab}
RUNNER=${RUNNER:-bash benchmarks/run_h200.sh}
PY=${PYTHON:-python3}
rm -rf "$O" && mkdir -p "$O" "$FINAL"
exec > >(tee -a "$O/ab.log") 2>&1
snap() { tar -C "$O" -czf "$FINAL/out.tgz.part" . && mv "$FINAL/out.tgz.part" "$FINAL/out.tgz"; }
ATTN_SETTINGS=${ATTN_SETTINGS:-}
ATTN_ARGS=${ATTN_ARGS:-"--parts decode --dtypes float16,bfloat16"}
QMM_SETTINGS=${QMM_SETTINGS:-}
QMM_ARGS=${QMM_ARGS:-"--dtypes=float16,bfloat16 --mvalues=1,2 --shapes=1024x1024,2048x1024,1024x2048,3072x1024,1024x3072"}
unset PACK
if [ -z "${SKIP_BUILD:-}" ]; then
  OUT=$O/build STAGES=build $RUNNER 2>&1 | tail -4
fi
settings=()
[ -n "$ATTN_SETTINGS" ] && IFS=';' read -ra settings <<< "$ATTN_SETTINGS"
i=0
for setting in "${settings[@]}"; do
  i=$((i + 1))
  [ "$setting" = "-" ] && setting=""
  echo "== attention $i: ${setting:-defaults}"
  # shellcheck disable=SC2086
  ([ -n "$setting" ] && export $setting; OUT=$O/attn_$i STAGES=attnncu WARM_T=0 ATTNNCU_T=${ATTNNCU_T:-120} \
      ATTNNCU_ARGS="$ATTN_ARGS" $RUNNER 2>&1 | grep -E "attnncu rc|MET|FAILED|rror")
  echo "${setting:-defaults}" > "$O/attn_$i/setting.txt"
  snap
done
if [ -n "$QMM_SETTINGS" ]; then
  OUT=$O/q STAGES=tune WARM_T=${QMM_WARM_T:-0} TUNE_T=${TUNE_T:-60} TUNE_ARGS="$QMM_ARGS" TUNE_SETTINGS="$QMM_SETTINGS" \
      $RUNNER 2>&1 | grep -E "rc=|tune |rror"
  snap
fi
CPP=${COMPARE_PYTHONPATH-/tmp/proj:/tmp/site}
[ -n "$CPP" ] && export PYTHONPATH=$CPP
cd benchmarks || exit 1
j="attention_h200_ncu.json"
n=${#settings[@]}
if [ "$n" -gt 0 ]; then
  for k in $(seq 2 $((n - 1))); do
    echo "== attention compare: $(cat "$O/attn_$k/setting.txt") against defaults (runs 1, $n)"
    $PY ncu_attention_gpu.py compare --json "$O/attn_$k/$j" "$O/attn_1/$j" "$O/attn_$n/$j" 2>&1 | tail -12
  done
  echo "== attention compare: defaults, run $n against run 1 (noise)"
  $PY ncu_attention_gpu.py compare --json "$O/attn_$n/$j" "$O/attn_1/$j" 2>&1 | tail -6
fi
if [ -n "$QMM_SETTINGS" ]; then
  IFS=';' read -ra qs <<< "$QMM_SETTINGS"
  m=${#qs[@]}
  for k in $(seq 2 $((m - 1))); do
    echo "== qmm compare: ${qs[$((k - 1))]} against defaults (tune 1, $m)"
    $PY ncu_qmm_gpu.py compare --json "$O/q/tune_$k/qmm_h200_ncu.json" "$O/q/tune_1/qmm_h200_ncu.json" \
        "$O/q/tune_$m/qmm_h200_ncu.json" --per-case 2>&1 | tail -30
  done
fi
if [ -n "${TEST_FILES:-}" ]; then
  left=$(( ${DEADLINE:-550} - ($(date +%s) - T0) ))
  echo "== parity: $TEST_FILES with ${TEST_ENV:-defaults}, ${left} s"
  cd .. && OUT=$O/t STAGES=test TEST_T=$left $RUNNER 2>&1 | grep -vE "^smoke"
fi
snap
