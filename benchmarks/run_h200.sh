#!/usr/bin/env bash
# Build, test and benchmark the CUDA backend on the lent H200 in ONE call.
# Run from the root of the checkout that the device tool ships, with the MLX
# CUDA kit at .kit/ (carry it; and .whl/ for tests/test_models.py, see below);
# the project is that checkout, or a copy of another tree at .cudawork/
# (carried) when one is there:
#   STAGES="probe build omit test ncu" bash benchmarks/run_h200.sh
# (stage masked: fully masked attention rows, diag_masked_rows_gpu.py)
# Logs and results go to $OUT (at most 8 files come back: pick the stages).
# MLX's and the driver's JIT caches stay on the machine between calls of one
# lease (see JITDIR below): warm calls are quick, the first is not.
# Stage probe needs neither the kit nor the build (stream_probe.cu, plain CUDA).
set -u
STAGES=${STAGES:-"build diag test bench"}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
ROOT=$(pwd)
PROJ=${PROJ:-$([ -d .cudawork ] && echo .cudawork || echo .)}
has() { [[ " $STAGES " == *" $1 "* ]]; }
# The ncu flags of every kernel-time stage: durations only, caches flushed
# before each kernel, clocks left alone, only the script's profiling range.
NCU_TIME=(--csv --page raw --print-units base --metrics gpu__time_duration.sum
          --cache-control all --clock-control none --profile-from-start off)
# The first qmm ncu process on a fresh machine profiled nothing for minutes
# (190 s in session 10, 150 s in 11, 150 and 120 s in 19). Session 20 found
# why, from the progress lines of ncu_qmm_gpu.py run (ncu_warm_h100_s20.log):
# MLX's OWN quantized_matmul takes 31-35 s at its first call with M = 9 and
# again with M = 64, per dtype (its kernels for M > 8 are JIT-compiled), while
# ours and MLX's M <= 8 path are ready at once. The compiled code lands in
# MLX_PTX_CACHE_DIR (JITDIR below), so later processes of the lease are quick.
# So, once per call, before the first ncu stage, the profiled scripts run
# without ncu over MLX's M classes in both dtypes (WARM_T seconds each, 400 by
# default; 0 skips it, as on a machine already warm).
ncu_warm() {
  [ -n "${ncu_warm_done:-}" ] && return
  [ "${WARM_T:-400}" = 0 ] && return
  ncu_warm_done=1
  local t0; t0=$(date +%s)
  (cd "$PROJ"/benchmarks && timeout ${WARM_T:-400} python3 ncu_qmm_gpu.py run --cases /tmp/warm_qmm.json \
      --shapes 4096x4096 --mvalues 1,9,12,16,24,32,64 --dtypes float16,bfloat16 && \
      timeout ${WARM_T:-400} python3 ncu_attention_gpu.py run --cases /tmp/warm_attn.json --quick) \
      > "$OUT/ncu_warm.log" 2>&1
  echo "ncu warm-up (no ncu) rc=$? in $(( $(date +%s) - t0 )) s"
}

# PACK=1: everything under $OUT leaves as one out.tgz (the device tool brings
# back at most 8 files).
pack() {
  tar -C "$OUT" -czf /tmp/out.tgz . && find "$OUT" -mindepth 1 -delete && mv /tmp/out.tgz "$OUT/"
}
[ -n "${PACK:-}" ] && trap pack EXIT

if has probe; then
  # Ceilings at the benchmark weights' sizes: pure reads, launch costs, a TMA
  # ring against synthetic instructions a KB (benchmarks/stream_probe.py).
  t0=$(date +%s)
  (cd "$PROJ/benchmarks" && timeout ${PROBE_T:-240} python3 stream_probe.py all --work /tmp/probe \
      --out "$OUT") > "$OUT/probe.log" 2>&1
  echo "probe rc=$? in $(( $(date +%s) - t0 )) s"; tail -${PROBE_LINES:-16} "$OUT/probe.log"
  [ "$STAGES" = "probe" ] && exit 0
fi

if [ -f .kit/mlx-cuda-kit.tar.xz ]; then
  mkdir -p /tmp/site && tar -C /tmp/site -xJf .kit/mlx-cuda-kit.tar.xz
else
  echo "no .kit/mlx-cuda-kit.tar.xz (../shared/tools/make-cuda-kit.sh, then carry .kit)"; exit 1
fi
export PYTHONPATH=/tmp/site
# JIT caches. MLX compiles many of its CUDA kernels with NVRTC at first use
# (PTX cached under MLX_PTX_CACHE_DIR, default /tmp/mlx/<version>/ptx) and the
# driver compiles PTX to SASS (CUDA_CACHE_PATH). On a fresh machine that first
# use is the first qmm ncu process's stall (session 20: MLX's quantized_matmul
# for M > 8, 31-35 s a dtype and M class; see ncu_warm above).
# Both caches live in JITDIR, which outlasts a call while the machine stays
# warm. They cannot travel: after session 19's first call (a build and 461
# tests) they held 1.1 GB, 113 MB as xz (carry takes 64 MiB), and packing
# them took minutes of that call. On that warm machine the next calls were
# quick: the qmm ncu grid twice and the attention decode grid twice in 120 s.
# Why session 19 stalled after a test stage was not checked (its tests may
# not have called MLX's op at every M class and dtype of the grid).
# JITCACHE=0: MLX's and the driver's default places.
JITDIR=/tmp/jitcache
if [ "${JITCACHE:-1}" != 0 ]; then
  export MLX_PTX_CACHE_DIR=$JITDIR/mlx-ptx CUDA_CACHE_PATH=$JITDIR/nv
  mkdir -p "$MLX_PTX_CACHE_DIR" "$CUDA_CACHE_PATH"
fi
# Python packages the device image lacks (mlx-lm, for tests/test_models.py),
# as wheels carried in .whl/ (benchmarks/tools/fetch-device-wheels.sh), no
# dependencies: the image has the rest (transformers, sentencepiece, ...).
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && echo "wheels: $(cd .whl && ls *.whl | tr '\n' ' ')"
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv
python3 -c "import scikit_build_core, pytest, nanobind; print('skbuild', scikit_build_core.__version__, 'pytest', pytest.__version__, 'nanobind', nanobind.__version__)"

if has basebuild; then
  # Base trees, in the background next to the build below: BASE_TREE, one or
  # more folders separated by spaces (e.g. .basetree from
  # benchmarks/tools/make-base-tree.sh REV, carried), else the checkout itself
  # (PROJ being another tree). The first goes into /tmp/projbase, the second
  # into /tmp/projbase2, ... PROJ_PYTHONPATH=/tmp/projbase:/tmp/site, set for
  # the whole run (any stage) or in one tune setting, then times it in the
  # same run.
  basebuild_pids=()
  n=0
  for tree in ${BASE_TREE:-.}; do
    n=$((n + 1)); dest=/tmp/projbase; log=$OUT/basebuild.log
    [ $n -gt 1 ] && dest=/tmp/projbase$n && log=$OUT/basebuild$n.log
    ( t0=$(date +%s); rm -rf "$dest" && cd "$tree" && python3 -m pip install -q --no-build-isolation \
        --no-deps --target "$dest" . > "$log" 2>&1
      echo "basebuild $tree -> $dest rc=$? in $(( $(date +%s) - t0 )) s" >> "$log" ) &
    basebuild_pids+=($!)
  done
fi

if has build; then
  t0=$(date +%s)
  (rm -rf /tmp/proj && cd "$PROJ" && python3 -m pip install -q --no-build-isolation --no-deps --target /tmp/proj . ) > "$OUT/build.log" 2>&1
  rc=$?
  echo "build rc=$rc in $(( $(date +%s) - t0 )) s"
  if [ $rc -ne 0 ]; then tail -60 "$OUT/build.log"; exit 1; fi
fi
# The build a stage imports: /tmp/proj (build), or PROJ_PYTHONPATH (another
# build, e.g. basebuild's /tmp/projbase:/tmp/site), set for the whole run or,
# read again by the tune stage, in one tune setting.
use_build() {
  export PYTHONPATH=${PROJ_PYTHONPATH:-${PYTHONPATH}}
}
export PYTHONPATH=/tmp/proj:/tmp/site
use_build
python3 -c "
import mlx.core as mx, numpy as np, mlx_kernels as mk
x = mx.random.normal((4, 128)).astype(mx.float16)
w, s, b = mx.quantize(mx.random.normal((64, 128)), stream=mx.cpu)
s = s.astype(mx.float16); b = b.astype(mx.float16)
Wd = np.array(mx.dequantize(w, s.astype(mx.float32), b.astype(mx.float32), stream=mx.cpu), dtype=np.float64)
r = np.array(x.astype(mx.float32), dtype=np.float64) @ Wd.T
for name, o in (('ours', mk.quantized_matmul(x, w, s, b)), ('mlx', mx.quantized_matmul(x, w, s, b))):
    o = np.array(o.astype(mx.float32), dtype=np.float64)
    print('smoke', name, 'rel err vs float64', np.linalg.norm(o - r) / np.linalg.norm(r))
" 2>&1 | tail -5

if has diag; then
  (cd "$PROJ"/benchmarks && timeout ${DIAG_T:-150} python3 diag_qmm_gpu.py) > "$OUT/diag.log" 2>&1
  echo "diag rc=$?"; grep -E "BAD|bad cases|Error" "$OUT/diag.log" | head -30
fi

if has lazy; then
  (cd "$PROJ"/benchmarks && timeout 90 python3 diag_lazy_gpu.py; MLX_USE_CUDA_GRAPHS=0 timeout 90 python3 diag_lazy_gpu.py) > "$OUT/lazy.log" 2>&1
  echo "lazy rc=$?"; cat "$OUT/lazy.log" | grep -v Warning | head -120
fi

if has failing; then
  # FAILING: the test ids to rerun (space-separated)
  # The named failing tests alone, serially, with their messages; then again
  # without CUDA graphs.
  (cd "$PROJ"/tests && timeout ${FAIL_T:-150} python3 -m pytest --device gpu -p no:xdist -p no:cacheprovider \
      -p no:benchmark -q --tb=short -rf $FAILING) > "$OUT/failing.log" 2>&1
  echo "failing rc=$?"; grep -E "^E |FAILED|passed|failed" "$OUT/failing.log" | head -60
  (cd "$PROJ"/tests && MLX_USE_CUDA_GRAPHS=0 timeout ${FAIL_T:-150} python3 -m pytest --device gpu -p no:xdist -p no:cacheprovider \
      -p no:benchmark -q --tb=line -rf $FAILING) > "$OUT/failing_nographs.log" 2>&1
  echo "failing (no graphs) rc=$?"; grep -E "FAILED|passed|failed" "$OUT/failing_nographs.log" | head -30
fi

if has prof; then
  (cd "$PROJ"/benchmarks && timeout ${PROF_T:-200} ncu --clock-control none --set full -k regex:qmm \
      -o "$OUT/qmm_prof" python3 prof_qmm_gpu.py ${PROF_ARGS:-}) > "$OUT/prof.log" 2>&1
  echo "prof rc=$?"
  ncu -i "$OUT/qmm_prof.ncu-rep" --page details --print-units base > "$OUT/prof_details.txt" 2>&1
  # stall reasons per kernel, and per SASS instruction (as stage attnprof)
  ncu -i "$OUT/qmm_prof.ncu-rep" --page raw --csv --print-units base > "$OUT/qmm_prof_raw.csv" 2>&1
  python3 "$PROJ"/benchmarks/tools/ncu_raw_stalls.py "$OUT/qmm_prof_raw.csv" 2>&1 | head -40
  ncu -i "$OUT/qmm_prof.ncu-rep" --page source --print-source sass --csv > "$OUT/qmm_prof_sass.csv" 2>&1
  echo "sass page: $(wc -l < "$OUT/qmm_prof_sass.csv") lines"
  grep -E "${PROF_GREP:-tc_qmm|simt_qmm|Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Theoretical Occupancy}" "$OUT/prof_details.txt" | head -${PROF_LINES:-60}
fi

if has trace; then
  # The bulk qmm kernel's per-warp timeline (benchmarks/trace_qmm_bulk.py;
  # TRACE_ARGS e.g. --cases 14336x4096:1,8): when stages were ready and done.
  t0=$(date +%s)
  (cd "$PROJ"/benchmarks && timeout ${TRACE_T:-150} python3 trace_qmm_bulk.py --out "$OUT" \
      ${TRACE_ARGS:-}) > "$OUT/trace.log" 2>&1
  echo "trace rc=$? in $(( $(date +%s) - t0 )) s"; tail -${TRACE_LINES:-40} "$OUT/trace.log"
fi

if has attnprof; then
  # Nsight Compute's full set on our attention kernels of a few cases
  # (ATTNPROF_ARGS: ncu_attention_gpu.py run arguments, e.g. --only 4x8x1024):
  # the report's details page, then its lines on time, memory, occupancy and
  # warp stalls (ATTNPROF_GREP to pick others).
  t0=$(date +%s)
  (cd "$PROJ"/benchmarks && timeout ${ATTNPROF_T:-200} ncu --clock-control none --cache-control all \
      --set full --profile-from-start off -k "${ATTNPROF_KERNELS:-regex:attn_(decode|merge|prefill)}" -o "$OUT/attn_prof" \
      python3 ncu_attention_gpu.py run --cases /tmp/attn_prof_cases.json \
      ${ATTNPROF_ARGS:---only 4x8x1024}) > "$OUT/attn_prof.log" 2>&1
  echo "attnprof rc=$? in $(( $(date +%s) - t0 )) s"
  ncu -i "$OUT/attn_prof.ncu-rep" --page details --print-units base > "$OUT/attn_prof_details.txt" 2>&1
  # every metric of every profiled kernel (one CSV row a kernel), for the
  # stall reasons: benchmarks/tools/ncu_raw_stalls.py reads it
  ncu -i "$OUT/attn_prof.ncu-rep" --page raw --csv --print-units base > "$OUT/attn_prof_raw.csv" 2>&1
  python3 "$PROJ"/benchmarks/tools/ncu_raw_stalls.py "$OUT/attn_prof_raw.csv" 2>&1 | head -60
  # per SASS instruction: the warp samples and their stall reasons (read here
  # after the call: which instructions the warps wait at)
  ncu -i "$OUT/attn_prof.ncu-rep" --page source --print-source sass --csv > "$OUT/attn_prof_sass.csv" 2>&1
  echo "sass page: $(wc -l < "$OUT/attn_prof_sass.csv") lines"
  grep -E "${ATTNPROF_GREP:-attn_|Duration|DRAM Throughput|Memory Throughput|L2 Hit|Achieved Occupancy|Registers Per|Theoretical Occupancy|Warp Cycles Per Issued|Issue Slots Busy|Executed Ipc A|Stall|stall}" \
      "$OUT/attn_prof_details.txt" | head -${ATTNPROF_LINES:-80}
fi

if has mlxonly; then
  # MLX's own GPU op alone (no mlx_kernels in the process): is it wrong at K == gs?
  (cd "$PROJ"/benchmarks && timeout 60 python3 -c "
import mlx.core as mx, numpy as np
for (K, gs) in ((64, 64), (128, 128), (128, 64), (192, 64)):
    w, s, b = mx.quantize(mx.random.normal((72, K)), group_size=gs, stream=mx.cpu)
    x = mx.random.normal((3, K))
    Wd = mx.dequantize(w, s, b, group_size=gs, stream=mx.cpu)
    r = np.array(x, dtype=np.float64) @ np.array(Wd, dtype=np.float64).T
    for dt in (mx.float32, mx.float16):
        o = mx.quantized_matmul(x.astype(dt), w, s.astype(dt), b.astype(dt), group_size=gs, stream=mx.gpu)
        o = np.array(o.astype(mx.float32), dtype=np.float64)
        print('MLX-only GPU K', K, 'gs', gs, dt, 'rel err', np.linalg.norm(o - r) / np.linalg.norm(r))
") 2>&1 | tee "$OUT/diag.log"
fi

if has sanitize; then
  (cd "$PROJ"/tests && timeout ${SAN_T:-150} compute-sanitizer --tool memcheck --print-limit 20 \
      python3 -m pytest --device gpu -q -p no:xdist -p no:cacheprovider -x \
      test_quantized_matmul.py -k "test_shapes and b4 and f16 and (K4096 or K96) or test_batched_x or test_non_contiguous") > "$OUT/sanitize.log" 2>&1
  echo "sanitize rc=$?"; grep -E "ERROR SUMMARY|Invalid|passed|failed" "$OUT/sanitize.log" | head -12
fi

if has masked; then
  # Fully masked attention rows: MLX's and our value per dtype and mask kind
  # (benchmarks/diag_masked_rows_gpu.py; the tests that pin ours run in the
  # test stage: TEST_K=fully_masked).
  (cd "$PROJ"/benchmarks && timeout ${MASKED_T:-60} python3 diag_masked_rows_gpu.py) > "$OUT/diag_masked_rows.log" 2>&1
  echo "masked diag rc=$?"; grep -v Warning "$OUT/diag_masked_rows.log" | tail -20
fi

if has test; then
  t0=$(date +%s)
  # native backtraces of crashing workers (benchmarks/tools/segv_bt.c)
  gcc -shared -fPIC -O1 -o /tmp/segv_bt.so "$PROJ"/benchmarks/tools/segv_bt.c && export LD_PRELOAD=/tmp/segv_bt.so
  # TEST_ENV: VAR=VALUE ... for the test processes (e.g. MLX_KERNELS_QMM_CANDIDATE=1);
  # TEST_K: a pytest -k expression (spaces allowed, e.g. "small_weights or m_sweep").
  # shellcheck disable=SC2086
  (cd "$PROJ"/tests && { [ -z "${TEST_ENV:-}" ] || export ${TEST_ENV}; } && \
      timeout ${TEST_T:-330} python3 -m pytest --device gpu -v -n ${NPROC:-12} -p no:cacheprovider \
      -p no:benchmark --durations=15 -W "default" ${TEST_FILES:-test_quantized_matmul*.py} \
      ${TEST_K:+-k "$TEST_K"}) > "$OUT/tests.log" 2>&1
  echo "tests rc=$? in $(( $(date +%s) - t0 )) s"
  grep -E "FAILED|crashed|Fatal" "$OUT/tests.log" | head -40
  grep -E "MLX GPU quantized_matmul broken" "$OUT/tests.log" | sed -E 's/.*broken here \(([^;:]*).*/\1/' | sort | uniq -c
  tail -3 "$OUT/tests.log"
  unset LD_PRELOAD
  grep -A14 "native backtrace" "$OUT/tests.log" | head -60
fi

if has small; then
  (cd "$PROJ"/tests && timeout 200 python3 -m pytest --device gpu -q -x -p no:cacheprovider \
      "test_quantized_matmul.py::test_shapes" -k "T-N72 and (K32- or K96-) and f16") 2>&1 | tail -25
  (cd "$PROJ"/benchmarks && timeout 60 python3 -c "
import mlx.core as mx, numpy as np, mlx_kernels as mk
for K in (32, 96, 192):
    w,s,b = mx.quantize(mx.random.normal((72,K)), group_size=32, stream=mx.cpu)
    s=s.astype(mx.float16); b=b.astype(mx.float16); x=mx.random.normal((3,K)).astype(mx.float16)
    o = mk.quantized_matmul(x,w,s,b,group_size=32, stream=mx.gpu)
    r = np.array(x.astype(mx.float32)) @ np.array(mx.dequantize(w,s.astype(mx.float32),b.astype(mx.float32),group_size=32,stream=mx.cpu)).T
    o = np.array(o.astype(mx.float32)); print('K', K, 'finite', np.isfinite(o).all(), 'err', np.linalg.norm(o-r)/np.linalg.norm(r))
") 2>&1 | tail -8
fi

if has quick; then
  (cd "$PROJ"/benchmarks && timeout ${QUICK_T:-120} python3 bench_qmm_gpu.py --quick --reps 5 --tag _quick --out "$OUT") > "$OUT/bench_quick.log" 2>&1
  tail -12 "$OUT/bench_quick.log"
fi

if has bench; then
  t0=$(date +%s)
  (cd "$PROJ"/benchmarks && timeout ${BENCH_T:-420} python3 bench_qmm_gpu.py --reps 5 --dtypes ${BENCH_DTYPES:-float16} \
      ${BENCH_M:+--mvalues $BENCH_M} ${BENCH_SHAPES:+--shapes $BENCH_SHAPES} --out "$OUT") > "$OUT/bench.log" 2>&1
  echo "bench rc=$? in $(( $(date +%s) - t0 )) s"
  tail -32 "$OUT/bench.log"
fi

if has attnbench; then
  # flash_attention vs MLX's sdpa, decode and causal prefill (ATTN_QUICK=1: a handful of cases)
  t0=$(date +%s)
  (cd "$PROJ"/benchmarks && timeout ${ATTN_T:-360} python3 bench_attention_gpu.py --dtypes ${ATTN_DTYPES:-float16} \
      ${ATTN_QUICK:+--quick} ${ATTN_PARTS:+--parts $ATTN_PARTS} ${ATTN_TAG:+--tag $ATTN_TAG} --out "$OUT") > "$OUT/attnbench.log" 2>&1
  echo "attnbench rc=$? in $(( $(date +%s) - t0 )) s"
  tail -40 "$OUT/attnbench.log"
fi

# ncu_qmm DIR TIMEOUT ARGS...: ours and MLX's quantized_matmul kernel times
# (benchmarks/ncu_qmm_gpu.py run + parse) into DIR: qmm_ncu_cases.json, qmm_ncu.csv,
# qmm_ncu.err, qmm_h200_ncu.json and the plots; prints the parse tables. The
# environment of the call reaches the profiled process (the tune stage).
ncu_qmm() {
  local dir=$1 limit=$2; shift 2
  local t0; t0=$(date +%s)
  (cd "$PROJ"/benchmarks && timeout "$limit" ncu "${NCU_TIME[@]}" \
      python3 ncu_qmm_gpu.py run --cases "$dir/qmm_ncu_cases.json" \
      "$@") > "$dir/qmm_ncu.csv" 2> "$dir/qmm_ncu.err"
  echo "ncu rc=$? in $(( $(date +%s) - t0 )) s"; tail -3 "$dir/qmm_ncu.err"
  (cd "$PROJ"/benchmarks && python3 ncu_qmm_gpu.py parse --cases "$dir/qmm_ncu_cases.json" \
      --csv "$dir/qmm_ncu.csv" --out "$dir" ${PARSE_ARGS:-}) 2>&1
}

if has ncu; then
  ncu_warm
  # Kernel times of ours and MLX's quantized_matmul; NCU_ARGS: ncu_qmm_gpu.py run arguments.
  # shellcheck disable=SC2086
  ncu_qmm "$OUT" "${NCU_T:-240}" ${NCU_ARGS:-} | tail -34
fi

if [ -n "${basebuild_pids[*]:-}" ]; then
  wait "${basebuild_pids[@]}"; tail -qn1 "$OUT"/basebuild*.log
fi

if has tune; then
  ncu_warm
  # The qmm plan's tuning knobs (qmm_plan.cpp), one ncu process per setting.
  # TUNE_SETTINGS: settings separated by ';', each a list of VAR=VALUE
  # ("-" for the defaults); TUNE_ARGS: ncu_qmm_gpu.py run arguments. A setting
  # may set TUNE_EXTRA (one token, e.g. TUNE_EXTRA=--shapes=4096x4096,1024x4096):
  # appended after TUNE_ARGS, so it overrides them for that setting.
  IFS=';' read -ra settings <<< "${TUNE_SETTINGS:--}"
  i=0
  for setting in "${settings[@]}"; do
    i=$((i + 1)); d="$OUT/tune_$i"; mkdir -p "$d"
    [ "$setting" = "-" ] && setting=""
    echo "== tune $i: ${setting:-defaults}" | tee "$d/setting.txt"
    # (use_build: a setting's PROJ_PYTHONPATH; read only at the top, session
    # 24's A/B set it in settings and timed today's build four times)
    # shellcheck disable=SC2086
    ([ -n "$setting" ] && export $setting; use_build
     PARSE_ARGS=--per-case ncu_qmm "$d" "${TUNE_T:-120}" ${TUNE_ARGS:-} ${TUNE_EXTRA:-}) \
        | tail -${TUNE_LINES:-40}
  done
fi

if has omit; then
  ncu_warm
  # The bulk kernel whole and without its math / x staging / split-K reduction
  # (benchmarks/ncu_qmm_omit.py); OMIT_ARGS: its run arguments (--cases, --masks).
  t0=$(date +%s)
  # shellcheck disable=SC2086
  (cd "$PROJ/benchmarks" && timeout ${OMIT_T:-240} ncu "${NCU_TIME[@]}" \
      python3 ncu_qmm_omit.py run --cases-json /tmp/omit_cases.json \
      ${OMIT_ARGS:-}) > /tmp/omit.csv 2> "$OUT/omit.err"
  echo "omit rc=$? in $(( $(date +%s) - t0 )) s"; grep -E "WARNING|Error" "$OUT/omit.err" | head -5
  (cd "$PROJ/benchmarks" && python3 ncu_qmm_omit.py parse --cases-json /tmp/omit_cases.json \
      --csv /tmp/omit.csv --out "$OUT") 2>&1 | tee "$OUT/omit.log" | tail -${OMIT_LINES:-20}
fi

if has attnncu; then
  ncu_warm
  # Kernel times of ours and MLX's flash_attention (benchmarks/ncu_attention_gpu.py):
  # decode / prefill grid of bench_attention_gpu.py; ATTNNCU_ARGS e.g. "--quick",
  # "--dtypes float16,bfloat16", "--only 16x1x2048,4x1x4096", "--parts decode".
  t0=$(date +%s)
  (cd "$PROJ"/benchmarks && timeout ${ATTNNCU_T:-300} ncu --csv --page raw --print-units base \
      --metrics gpu__time_duration.sum,launch__grid_size,launch__registers_per_thread,launch__occupancy_limit_shared_mem,launch__occupancy_limit_registers,launch__waves_per_multiprocessor \
      --cache-control all --clock-control none \
      --profile-from-start off python3 ncu_attention_gpu.py run --cases "$OUT/attn_ncu_cases.json" \
      ${ATTNNCU_ARGS:-}) > "$OUT/attn_ncu.csv" 2> "$OUT/attn_ncu.err"
  echo "attnncu rc=$? in $(( $(date +%s) - t0 )) s"; grep -E "FAILED|Error|==ERROR==" "$OUT/attn_ncu.err" | head -10; tail -3 "$OUT/attn_ncu.err"
  (cd "$PROJ"/benchmarks && python3 ncu_attention_gpu.py parse --cases "$OUT/attn_ncu_cases.json" \
      --csv "$OUT/attn_ncu.csv" --out "$OUT") > "$OUT/attn_ncu_parse.log" 2>&1
  echo "attnncu parse rc=$?"; tail -45 "$OUT/attn_ncu_parse.log"
fi
