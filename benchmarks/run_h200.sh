#!/usr/bin/env bash
# Build, test and benchmark the CUDA backend on the lent H200 in ONE call.
# Run from the root of the checkout that the device tool ships, with this
# project copied to .cudawork/ and the MLX CUDA kit at .kit/:
#   STAGES="build test bench ncu" bash .cudawork/benchmarks/run_h200.sh
# Logs and results go to $OUT.
set -u
STAGES=${STAGES:-"build diag test bench"}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
ROOT=$(pwd)
has() { [[ " $STAGES " == *" $1 "* ]]; }

mkdir -p /tmp/site && tar -C /tmp/site -xJf .kit/mlx-cuda-kit.tar.xz
export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv
python3 -c "import scikit_build_core, pytest, nanobind; print('skbuild', scikit_build_core.__version__, 'pytest', pytest.__version__, 'nanobind', nanobind.__version__)"

if has build; then
  t0=$(date +%s)
  (cd .cudawork && python3 -m pip install -q --no-build-isolation --no-deps --target /tmp/proj . ) > "$OUT/build.log" 2>&1
  rc=$?
  echo "build rc=$rc in $(( $(date +%s) - t0 )) s"
  if [ $rc -ne 0 ]; then tail -60 "$OUT/build.log"; exit 1; fi
fi
export PYTHONPATH=/tmp/proj:/tmp/site
python3 -c "import mlx.core as mx, mlx_kernels as mk; x=mx.random.normal((4,128)).astype(mx.float16); w,s,b=mx.quantize(mx.random.normal((64,128))); s=s.astype(mx.float16); b=b.astype(mx.float16); print('smoke', (mk.quantized_matmul(x,w,s,b)-mx.quantized_matmul(x,w,s,b)).abs().max().item())" 2>&1 | tail -5

if has diag; then
  (cd .cudawork/benchmarks && timeout 120 python3 diag_small_k.py) 2>&1 | tee "$OUT/diag.log" | tail -40
fi

if has test; then
  t0=$(date +%s)
  (cd .cudawork/tests && python3 -m pytest --device gpu -q -n 16 -p no:cacheprovider \
      --maxfail=200 test_quantized_matmul*.py) > "$OUT/tests.log" 2>&1
  echo "tests rc=$? in $(( $(date +%s) - t0 )) s"
  grep -E "FAILED|Error" "$OUT/tests.log" | head -20
  tail -3 "$OUT/tests.log"
fi

if has small; then
  (cd .cudawork/tests && timeout 200 python3 -m pytest --device gpu -q -x -p no:cacheprovider \
      "test_quantized_matmul.py::test_shapes" -k "T-N72 and (K32- or K96-) and f16") 2>&1 | tail -25
  (cd .cudawork/benchmarks && timeout 60 python3 -c "
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
  (cd .cudawork/benchmarks && python3 bench_qmm_gpu.py --quick --out "$OUT") 2>&1 | tee "$OUT/bench_quick.log" | tail -25
fi

if has bench; then
  t0=$(date +%s)
  (cd .cudawork/benchmarks && python3 bench_qmm_gpu.py --reps 5 --out "$OUT") > "$OUT/bench.log" 2>&1
  echo "bench rc=$? in $(( $(date +%s) - t0 )) s"
  tail -32 "$OUT/bench.log"
fi

if has ncu; then
  (cd .cudawork/benchmarks && timeout 240 ncu --clock-control none -k regex:tc_qmm \
      --metrics gpu__time_duration.sum,dram__bytes_read.sum \
      python3 ncu_qmm_cases.py) > "$OUT/ncu.log" 2>&1
  echo "ncu rc=$?"
  grep -E "tc_qmm|gpu__time|dram__bytes|case" "$OUT/ncu.log" | head -60
fi
