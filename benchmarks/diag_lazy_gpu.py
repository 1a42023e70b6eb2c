"""Does our CUDA quantized_matmul depend on how its inputs were produced?
Lazily in the same graph vs evaluated beforehand; our op vs MLX's; reports
finiteness of ours, of MLX's and of the reference separately (run_h200.sh
stage lazy, once with CUDA graphs and once with MLX_USE_CUDA_GRAPHS=0)."""
import os

import mlx.core as mx
import numpy as np

import mlx_kernels as mk

mx.set_default_device(mx.gpu)
f32 = mx.float32
graphs = os.environ.get("MLX_USE_CUDA_GRAPHS", "1")
for (N, K) in [(4096, 4096), (1024, 1024), (72, 4096)]:
    for dt in (mx.float16, f32):
        for M in (1, 3, 16):
            for mode in ("eval", "lazy", "lazy-separate"):
                w, s, b = mx.quantize(mx.random.normal((N, K)), group_size=64, bits=4)
                s, b = s.astype(dt), b.astype(dt)
                x = mx.random.normal((M, K)).astype(dt)
                if mode == "eval":
                    mx.eval(w, s, b, x)
                o = mk.quantized_matmul(x, w, s, b)
                if mode == "lazy-separate":
                    mx.eval(o)
                om = mx.quantized_matmul(x, w, s, b)
                wd = mx.dequantize(w, s.astype(f32), b.astype(f32), group_size=64, bits=4)
                r = x.astype(f32) @ wd.T
                mx.eval(o, om, r)
                r64 = np.array(r, dtype=np.float64)
                def err(a):
                    a = np.array(a.astype(f32), dtype=np.float64)
                    if not np.isfinite(a).all():
                        return f"nonfinite({int((~np.isfinite(a)).sum())}/{a.size})"
                    return f"{np.linalg.norm(a - r64) / np.linalg.norm(r64):.1e}"
                print(f"graphs={graphs} {N}x{K} {dt} M={M} {mode:13s} ours {err(o):>18s} "
                      f"mlx {err(om):>18s} ref finite {np.isfinite(r64).all()}", flush=True)
