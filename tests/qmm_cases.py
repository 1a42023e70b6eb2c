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
