"""Inputs and references for quantized_matmul tests (shared by every backend)."""

import mlx.core as mx
import numpy as np

from tolerances import to_np64


def make_weights(N, K, group_size, bits, dtype, transpose=True):
    """Random quantized weights in the layout that `transpose` expects."""
    W = mx.random.normal((N, K) if transpose else (K, N))
    w, scales, biases = mx.quantize(W, group_size=group_size, bits=bits)
    out = w, scales.astype(dtype), biases.astype(dtype)
    mx.eval(*out)
    return out


def make_x(shape, dtype):
    x = mx.random.normal(shape).astype(dtype)
    mx.eval(x)
    return x


def reference64(x, w, scales, biases, transpose, group_size, bits):
    """float64 NumPy reference for x @ dequantize(w)(.T)."""
    Wd = mx.dequantize(
        w, scales.astype(mx.float32), biases.astype(mx.float32),
        group_size=group_size, bits=bits,
    )
    W64 = to_np64(Wd)
    x64 = to_np64(x)
    return x64 @ (W64.T if transpose else W64)


def poison(shape, dtype):
    """A NaN-filled array: outputs that reuse such memory show unwritten elements."""
    return mx.full(shape, float("nan"), dtype=dtype)


# MLX's own op is the parity target. On MLX's CUDA backend (0.32.4) it is
# broken for some inputs that ours handles: K == group_size gives wrong values
# or NaN, 1-D x raises "SmallVector out of range", and non-contiguous inputs
# raise "No implementation for problem shape" (H200 runs, see
# benchmarks/results/qmm_h200_notes.md). There MLX's CPU op is the reference.
# Ours is always checked against the float64 reference as well.
MLX_BROKEN_ERR = 0.25  # far beyond any rounding error of MLX (bf16 CPU: 7e-2)
# What MLX's GPU op raises where it is broken (checked when its output is read).
MLX_GPU_ERRORS = (RuntimeError, IndexError, ValueError)


def _warn_cpu_reference(reason):
    import warnings

    warnings.warn(f"MLX GPU quantized_matmul broken here ({reason}); MLX CPU op used as reference")


def _mlx_gpu_problem(x, w, scales, biases, kw, ref64):
    """Why MLX's GPU op cannot serve as the reference here, or (None, its output)."""
    if x.shape[-1] == kw["group_size"]:
        # Known wrong on MLX 0.32.4's CUDA backend, and slow to find out (~50 s
        # a case on the H200): skip it.
        return "K == group_size", None
    try:
        ref = mx.quantized_matmul(x, w, scales, biases, stream=mx.gpu, **kw)
        m = np.array(ref.astype(mx.float32)).astype(np.float64)
    except MLX_GPU_ERRORS as e:
        return f"{type(e).__name__}: {str(e)[:80]}", None
    if not np.all(np.isfinite(m)):
        return "non-finite output", None
    if ref64 is not None:
        denom = np.linalg.norm(ref64)
        err = np.linalg.norm(m - ref64) / (denom if denom > 0 else 1.0)
        if err > MLX_BROKEN_ERR:
            return f"error vs float64 {err:.3g}", None
    return None, ref


def mlx_reference(x, w, scales, biases, transpose, group_size, bits, stream, ref64=None):
    kw = dict(transpose=transpose, group_size=group_size, bits=bits)
    if stream != mx.gpu:
        return mx.quantized_matmul(x, w, scales, biases, stream=stream, **kw)
    reason, ref = _mlx_gpu_problem(x, w, scales, biases, kw, ref64)
    if reason is None:
        return ref
    _warn_cpu_reference(reason)
    return mx.quantized_matmul(x, w, scales, biases, stream=mx.cpu, **kw)


def mlx_layer_reference(layer, x, stream):
    """MLX's own layer (an mlx.nn quantized layer) applied to x on `stream`,
    evaluated; on the GPU, where MLX's op raises (1-D x, see above), its
    output on the CPU stream instead, as mlx_reference does."""
    with mx.stream(stream):
        out = layer(x)
    try:
        mx.eval(out)
        return out
    except MLX_GPU_ERRORS as e:
        if stream != mx.gpu:
            raise
        _warn_cpu_reference(f"{type(e).__name__}: {str(e)[:80]}")
    with mx.stream(mx.cpu):
        return layer(x)


# The CUDA plan's simt_qmv rule (qmm_plan.cpp), shared by the plan tests and
# the parity tests that pin it.
SIMT_MAX_KB = 1024  # simt_qmv's packed weights at M = 1


def simt_takes(M, N, K, bits, dtype="float16", max_kb=SIMT_MAX_KB):
    """Whether simt_qmv takes a transpose=true problem (qmm_plan.cpp, default
    knobs): float16/bfloat16 x, M = 1, at most 1 MB of packed weights."""
    return dtype != "float32" and M == 1 and N * K * bits // 8 <= max_kb * 1024
