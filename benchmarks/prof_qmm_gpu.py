"""A few quantized_matmul calls (ours) for an `ncu --set full` profile
(run_h200.sh stage prof): weights of the large Llama-3-8B shapes, M = 1, 8, 16, 64."""
import mlx.core as mx

import mlx_kernels as mk

mx.set_default_device(mx.gpu)
for (N, K), ms in [((128256, 4096), (1, 16)), ((14336, 4096), (1, 8, 64))]:
    w, s, b = mx.quantize(mx.random.normal((N, K)), group_size=64, bits=4)
    s, b = s.astype(mx.float16), b.astype(mx.float16)
    for M in ms:
        x = mx.random.normal((M, K)).astype(mx.float16)
        mx.eval(x, w, s, b)
        print(f"case N={N} K={K} M={M}", flush=True)
        mx.eval(mk.quantized_matmul(x, w, s, b))
        mx.synchronize()
