"""Diagnose parity failures at small K: ours (GPU), MLX GPU and MLX CPU against
a float64 reference built from a CPU dequantize."""
import mlx.core as mx
import numpy as np

import mlx_kernels as mk


def rel(a, r):
    a = np.array(a.astype(mx.float32), dtype=np.float64)
    return float(np.linalg.norm(a - r) / max(np.linalg.norm(r), 1e-30))


def case(N, K, gs, bits, dtype, M, sdtype=None, xshape=None):
    sdtype = sdtype or dtype
    W = mx.random.normal((N, K))
    w, s, b = mx.quantize(W, group_size=gs, bits=bits, stream=mx.cpu)
    s, b = s.astype(sdtype), b.astype(sdtype)
    x = mx.random.normal(xshape or (M, K)).astype(dtype)
    mx.eval(w, s, b, x)
    Wd = mx.dequantize(w, s.astype(mx.float32), b.astype(mx.float32), group_size=gs, bits=bits,
                       stream=mx.cpu)
    ref = np.array(x.astype(mx.float32), dtype=np.float64) @ np.array(Wd, dtype=np.float64).T
    kw = dict(group_size=gs, bits=bits)
    res = {}
    for name, f in [("ours", lambda: mk.quantized_matmul(x, w, s, b, stream=mx.gpu, **kw)),
                    ("mlx_gpu", lambda: mx.quantized_matmul(x, w, s, b, stream=mx.gpu, **kw)),
                    ("mlx_cpu", lambda: mx.quantized_matmul(x, w, s, b, stream=mx.cpu, **kw))]:
        try:
            o = f()
            mx.eval(o)
            res[name] = f"{rel(o, ref):.2e}"
        except Exception as e:  # noqa: BLE001
            res[name] = f"ERR {type(e).__name__}: {str(e)[:60]}"
    print(f"N={N} K={K} gs={gs} b{bits} {dtype} s={sdtype} M={M} x={xshape}: {res}", flush=True)


for dtype in (mx.float16, mx.float32, mx.bfloat16):
    for (K, gs) in ((64, 64), (128, 128), (128, 64), (192, 64), (96, 32), (256, 64)):
        case(72, K, gs, 4, dtype, 3)
case(72, 64, 64, 8, mx.float16, 3)
case(64, 128, 64, 4, mx.float16, 5, sdtype=mx.float32)
case(64, 128, 64, 4, mx.bfloat16, 5, sdtype=mx.float16)
case(64, 128, 64, 4, mx.float32, 5, sdtype=mx.bfloat16)
case(40, 128, 64, 4, mx.float16, 1, xshape=(128,))
case(40, 128, 64, 4, mx.float16, 1, xshape=(2, 3, 128))
# large shapes, split-K and M chunks
for M in (1, 5, 16, 33, 64, 100):
    case(4096, 4096, 64, 4, mx.float16, M)
    case(1000, 4096, 64, 8, mx.bfloat16, M)
