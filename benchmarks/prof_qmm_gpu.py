"""A few quantized_matmul calls (ours) for an `ncu --set full` profile
(run_h200.sh stage prof). Default: the large Llama-3-8B shapes at M = 1, 8, 16,
64; `--cases 128256x4096:1,8 14336x4096:1` picks others (4-bit, group 64,
float16)."""
import argparse

import mlx.core as mx

import mlx_kernels as mk

ap = argparse.ArgumentParser()
ap.add_argument("--cases", nargs="*", default=["128256x4096:1,16", "14336x4096:1,8,64"])
args = ap.parse_args()

mx.set_default_device(mx.gpu)
for case in args.cases:
    shape, ms = case.split(":")
    N, K = (int(v) for v in shape.split("x"))
    w, s, b = mx.quantize(mx.random.normal((N, K)), group_size=64, bits=4)
    s, b = s.astype(mx.float16), b.astype(mx.float16)
    for M in (int(v) for v in ms.split(",")):
        x = mx.random.normal((M, K)).astype(mx.float16)
        mx.eval(x, w, s, b)
        print(f"case N={N} K={K} M={M}", flush=True)
        mx.eval(mk.quantized_matmul(x, w, s, b))
        mx.synchronize()
