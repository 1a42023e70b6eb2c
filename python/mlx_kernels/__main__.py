"""The demo: ``python -m mlx_kernels``.

On the current default device it checks parity with MLX's built-ins and times
ours against them on a few decode shapes.
"""

from __future__ import annotations

import argparse
import statistics
import time

import mlx.core as mx
import numpy as np

import mlx_kernels as mk


def _rel_err(a, b):
    a = np.array(a.astype(mx.float32), dtype=np.float64)
    b = np.array(b.astype(mx.float32), dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _median_time(fn, reps):
    fn()  # warm up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _device_name():
    dev = mx.default_device()
    if dev.type == mx.gpu:
        return "gpu (Metal)" if mx.metal.is_available() else "gpu (CUDA)"
    return "cpu"


def quantized_matmul_demo(quick: bool):
    on_gpu = mx.default_device().type == mx.gpu
    print("quantized_matmul (affine, group size 64)")
    print("  parity: relative error against a float64 reference (4-bit / 8-bit),")
    print("  and our distance from mx.quantized_matmul")
    print(f"    {'dtype':10s} {'ours':>17s} {'MLX':>17s} {'ours vs MLX':>17s}")
    for dtype in (mx.float32, mx.float16, mx.bfloat16):
        cols = {"ours": [], "mlx": [], "diff": []}
        for bits in (4, 8):
            w, s, b = mx.quantize(mx.random.normal((320, 512)), group_size=64, bits=bits)
            s, b = s.astype(dtype), b.astype(dtype)
            x = mx.random.normal((5, 512)).astype(dtype)
            ours = mk.quantized_matmul(x, w, s, b, bits=bits)
            theirs = mx.quantized_matmul(x, w, s, b, group_size=64, bits=bits)
            W = mx.dequantize(w, s.astype(mx.float32), b.astype(mx.float32), group_size=64, bits=bits)
            ref = np.array(x.astype(mx.float32), np.float64) @ np.array(W, np.float64).T
            cols["ours"].append(_rel_err(ours, mx.array(ref)))
            cols["mlx"].append(_rel_err(theirs, mx.array(ref)))
            cols["diff"].append(_rel_err(ours, theirs))
        name = str(dtype).replace("mlx.core.", "")
        print(f"    {name:10s}" + "".join(
            f" {v[0]:>8.1e}/{v[1]:<8.1e}" for v in cols.values()))

    # MLX's float16 CPU path takes about half a second per call at this size,
    # so the CPU speed table uses float32.
    dtype = mx.float16 if on_gpu else mx.float32
    N = K = 4096
    sets = []
    for _ in range(4):  # rotate weights: the timings come from memory, not cache
        w, s, b = mx.quantize(mx.random.normal((N, K)), group_size=64, bits=4)
        sets.append((w, s.astype(dtype), b.astype(dtype)))
    mx.eval(sets)
    per_eval = 8 if on_gpu else 1  # batch several ops per eval on the GPU
    reps = 5 if quick else 20
    print(f"\n  speed, 4-bit, N = K = {N}, {dtype}, {_device_name()} "
          f"(median of {reps}, {per_eval} op(s) per eval)")
    print(f"    {'M':>3}  {'ours (ms)':>10}  {'MLX (ms)':>10}  {'speedup':>8}")
    for M in (1, 4, 8, 16):
        x = mx.random.normal((M, K)).astype(dtype)
        mx.eval(x)

        def run(op):
            def go():
                outs = [op(x, *sets[i % 4], group_size=64, bits=4) for i in range(per_eval)]
                mx.eval(outs)
            return go

        ours = _median_time(run(mk.quantized_matmul), reps) / per_eval
        theirs = _median_time(run(mx.quantized_matmul), reps) / per_eval
        print(f"    {M:>3}  {ours * 1e3:>10.3f}  {theirs * 1e3:>10.3f}  {theirs / ours:>7.1f}x")


def flash_attention_demo(quick: bool):
    on_gpu = mx.default_device().type == mx.gpu
    print("\nflash_attention (32 query heads, 8 KV heads, D = 128)")
    print("  parity with mx.fast.scaled_dot_product_attention (relative error):")
    for dtype in (mx.float32, mx.float16, mx.bfloat16):
        errs = []
        for mask, qL in ((None, 1), ("causal", 33), ("bool", 7)):
            q = mx.random.normal((2, 32, qL, 128)).astype(dtype)
            k = mx.random.normal((2, 8, 300, 128)).astype(dtype)
            v = mx.random.normal((2, 8, 300, 128)).astype(dtype)
            m = mx.random.uniform(shape=(qL, 300)) > 0.3 if mask == "bool" else mask
            ours = mk.flash_attention(q, k, v, scale=128**-0.5, mask=m)
            theirs = mx.fast.scaled_dot_product_attention(q, k, v, scale=128**-0.5, mask=m)
            errs.append(_rel_err(ours, theirs))
        name = str(dtype).replace("mlx.core.", "")
        print(f"    {name:10s} no mask {errs[0]:.1e}   causal {errs[1]:.1e}   bool {errs[2]:.1e}")

    dtype = mx.float16 if on_gpu else mx.float32
    reps = 5 if quick else 20
    per_eval = 8 if on_gpu else 1
    print(f"\n  speed, {dtype}, {_device_name()} (median of {reps})")
    print(f"    {'case':24s}  {'ours (ms)':>10}  {'MLX (ms)':>10}  {'speedup':>8}")
    cases = [("decode B=1 kL=4096", 1, 1, 4096, None), ("decode B=4 kL=2048", 4, 1, 2048, None),
             ("prefill causal L=512", 1, 512, 512, "causal")]
    for name, B, qL, kL, mask in cases:
        q = mx.random.normal((B, 32, qL, 128)).astype(dtype)
        k = mx.random.normal((B, 8, kL, 128)).astype(dtype)
        v = mx.random.normal((B, 8, kL, 128)).astype(dtype)
        mx.eval(q, k, v)

        def run(op):
            def go():
                mx.eval([op(q, k, v, scale=128**-0.5, mask=mask) for _ in range(per_eval)])
            return go

        ours = _median_time(run(mk.flash_attention), reps) / per_eval
        theirs = _median_time(run(mx.fast.scaled_dot_product_attention), reps) / per_eval
        print(f"    {name:24s}  {ours * 1e3:>10.3f}  {theirs * 1e3:>10.3f}  {theirs / ours:>7.1f}x")


def main():
    parser = argparse.ArgumentParser(prog="python -m mlx_kernels", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    print(f"mlx_kernels {mk.__version__} on mlx {mx.__version__}, "
          f"default device: {_device_name()}\n")
    mx.random.seed(0)
    quantized_matmul_demo(args.quick)
    flash_attention_demo(args.quick)


if __name__ == "__main__":
    main()
