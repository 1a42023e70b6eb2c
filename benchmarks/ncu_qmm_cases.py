"""A few quantized_matmul calls for an ncu cross-check of kernel durations."""
import mlx.core as mx

import mlx_kernels as mk

mx.set_default_device(mx.gpu)
for (N, K) in [(14336, 4096), (4096, 14336), (128256, 4096)]:
    w, s, b = mx.quantize(mx.random.normal((N, K)), group_size=64, bits=4)
    s, b = s.astype(mx.float16), b.astype(mx.float16)
    for M in (1, 4, 8, 16, 64):
        x = mx.random.normal((M, K)).astype(mx.float16)
        mx.eval(x, w, s, b)
        print(f"case N={N} K={K} M={M}", flush=True)
        mx.eval(mk.quantized_matmul(x, w, s, b))
        mx.synchronize()
