"""Bad input to quantized_matmul: a clear exception naming the argument."""

import mlx.core as mx
import numpy as np
import pytest

import mlx_kernels as mk
from qmm_cases import make_weights, make_x

K, N = 128, 64


@pytest.fixture
def args():
    w, s, b = make_weights(N, K, 64, 4, mx.float32)
    return make_x((3, K), mx.float32), w, s, b


def call(x, w, s, b, **kw):
    out = mk.quantized_matmul(x, w, s, b, **kw)
    mx.eval(out)
    return out


@pytest.mark.parametrize(
    "mutate,exc,match",
    [
        # ranks
        (lambda x, w, s, b: (mx.array(1.0), w, s, b), ValueError, "x must have at least 1 dimension"),
        (lambda x, w, s, b: (x, w[None], s, b), ValueError, "w must be 2-D"),
        (lambda x, w, s, b: (x, w, s[0], b[0]), ValueError, "scales must be 2-D"),
        # K does not match w's packed width / the scales' group count
        (lambda x, w, s, b: (make_x((3, 2 * K), mx.float32), w, s, b), ValueError, r"w must have shape \(N, K \* bits / 32\)"),
        (lambda x, w, s, b: (x, w, s[:, :1], b[:, :1]), ValueError, r"scales must have shape \(N, K / group_size\)"),
        (lambda x, w, s, b: (x, w, s[:32], b[:32]), ValueError, r"scales must have shape"),
        # K not a multiple of the group size
        (lambda x, w, s, b: (make_x((3, 100), mx.float32), w, s, b), ValueError, "must be a multiple of group_size"),
        # scales and biases disagree
        (lambda x, w, s, b: (x, w, s, b[:, :1]), ValueError, "scales and biases must have the same shape"),
        (lambda x, w, s, b: (x, w, s, b.astype(mx.float16)), TypeError, "scales and biases must have the same dtype"),
        # dtypes
        (lambda x, w, s, b: (x, w.astype(mx.int32), s, b), TypeError, "w must be uint32"),
        (lambda x, w, s, b: (x, w.astype(mx.float32), s, b), TypeError, "w must be uint32"),
        (lambda x, w, s, b: (x.astype(mx.int32), w, s, b), TypeError, "x must be float32, float16 or bfloat16"),
        (lambda x, w, s, b: (x, w, s.astype(mx.int32), b.astype(mx.int32)), TypeError, "scales must be float"),
        (lambda x, w, s, b: (x, w, s, None), ValueError, "biases is required"),
    ],
    ids=[
        "x-scalar", "w-3d", "scales-1d", "K-vs-w", "K-vs-scales-groups", "N-vs-scales",
        "K-not-multiple", "biases-shape", "biases-dtype", "w-int32", "w-float", "x-int",
        "scales-int", "biases-none",
    ],
)
def test_bad_arguments(args, mutate, exc, match):
    with pytest.raises(exc, match=match):
        call(*mutate(*args))


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 6, 7, 16])
def test_unsupported_bits(args, bits):
    with pytest.raises(ValueError, match="bits must be 4 or 8"):
        call(*args, bits=bits)


@pytest.mark.parametrize("group_size", [0, 16, 48, 256, -64])
def test_unsupported_group_size(args, group_size):
    with pytest.raises(ValueError, match="group_size must be 32, 64 or 128"):
        call(*args, group_size=group_size)


def test_wrong_group_size_for_scales(args):
    x, w, s, b = args  # quantized with group size 64
    with pytest.raises(ValueError, match="is group_size right"):
        call(x, w, s, b, group_size=32)


def test_wrong_bits_for_w(args):
    x, w, s, b = args  # 4-bit: w is (64, 16); as 8-bit it would hold K = 64
    with pytest.raises(ValueError, match=r"w must have shape"):
        call(x, w, s, b, bits=8)


def test_mismatched_transpose_shapes():
    w, s, b = make_weights(64, 128, 64, 4, mx.float32, transpose=True)  # w: (64, 16)
    x = make_x((3, 128), mx.float32)
    with pytest.raises(ValueError, match="with transpose=False, w must have shape"):
        call(x, w, s, b, transpose=False)


def test_transpose_false_scales_shape():
    w, s, b = make_weights(128, 64, 64, 4, mx.float32, transpose=False)  # W: (64, 128)
    x = make_x((3, 64), mx.float32)
    with pytest.raises(ValueError, match=r"scales must have shape \(K, N / group_size\)"):
        call(x, w, s[:, :1], b[:, :1], transpose=False)


def test_not_an_mx_array(args):
    x, w, s, b = args
    with pytest.raises(TypeError, match="x must be an mlx.core.array"):
        call(np.ones((3, K), np.float32), w, s, b)

