"""Repeat our CUDA quantized_matmul on the benchmark shapes and report any
non-finite or inaccurate output (float32 dequantize + matmul reference on the
GPU). A correctness sweep, not a benchmark: run by run_h200.sh (stage diag)."""
import sys

import mlx.core as mx

import mlx_kernels as mk

mx.set_default_device(mx.gpu)
SHAPES = [(4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336), (128256, 4096),
          (1024, 1024), (3072, 1024), (151936, 1024)]
MS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 17, 24, 32, 33, 64, 65, 100]
bad = 0
for dt in (mx.float16, mx.bfloat16):
    for N, K in SHAPES:
        w, s, b = mx.quantize(mx.random.normal((N, K)), group_size=64, bits=4)
        s, b = s.astype(dt), b.astype(dt)
        wd = mx.dequantize(w, s.astype(mx.float32), b.astype(mx.float32), group_size=64, bits=4)
        for M in MS:
            x = mx.random.normal((M, K)).astype(dt)
            r = x.astype(mx.float32) @ wd.T
            errs = []
            for trial in range(3):
                o = mk.quantized_matmul(x, w, s, b).astype(mx.float32)
                fin = mx.all(mx.isfinite(o)).item()
                e = (mx.linalg.norm(o - r) / mx.linalg.norm(r)).item()
                errs.append(e if fin else float("nan"))
            worst = max(errs) if all(e == e for e in errs) else float("nan")
            flag = "" if worst < 2e-2 else "  <-- BAD"
            bad += bool(flag)
            if flag or M in (1, 16, 64):
                print(f"{dt} {N}x{K} M={M}: rel err {errs}{flag}", flush=True)
        del w, s, b, wd
        mx.clear_cache()
print("diag: bad cases", bad)
sys.exit(1 if bad else 0)
