"""Transforms of quantized_matmul: grad, jvp, vmap, compile (also shapeless)."""

import mlx.core as mx
import numpy as np
import pytest

import mlx_kernels as mk
from qmm_cases import make_weights, make_x
from tolerances import rel_err, to_np64


@pytest.fixture(params=[True, False], ids=["T", "N"])
def problem(request):
    transpose = request.param
    w, s, b = make_weights(96, 128, 32, 4, mx.float32, transpose)
    x = make_x((2, 3, 128), mx.float32)
    return x, w, s, b, transpose


def test_grad_matches_mlx(problem, device):
    x, w, s, b, transpose = problem
    cot = make_x((2, 3, 96), mx.float32)

    def loss(f):
        return lambda x, s, b: mx.sum(
            cot * f(x, w, s, b, transpose=transpose, group_size=32, bits=4, stream=device)
        )

    ours = mx.grad(loss(mk.quantized_matmul), argnums=(0, 1, 2))(x, s, b)
    theirs = mx.grad(loss(mx.quantized_matmul), argnums=(0, 1, 2))(x, s, b)
    for name, g, r in zip(("x", "scales", "biases"), ours, theirs):
        assert g.shape == r.shape and g.dtype == r.dtype, name
        assert rel_err(to_np64(g), to_np64(r)) < 1e-4, name


def test_no_grad_wrt_quantized_weights(problem, device):
    x, w, s, b, transpose = problem
    f = lambda w: mk.quantized_matmul(x, w, s, b, transpose=transpose, group_size=32, stream=device).sum()
    with pytest.raises(ValueError, match="quantized weights"):
        mx.grad(f)(w)


def test_jvp(problem, device):
    x, w, s, b, transpose = problem
    tx, ts, tb = make_x(x.shape, mx.float32), make_x(s.shape, mx.float32), make_x(b.shape, mx.float32)
    f = lambda x, s, b: mk.quantized_matmul(x, w, s, b, transpose=transpose, group_size=32, stream=device)
    _, (jx,) = mx.jvp(lambda x: f(x, s, b), [x], [tx])
    _, (ref,) = mx.jvp(
        lambda x: mx.quantized_matmul(x, w, s, b, transpose=transpose, group_size=32, stream=device),
        [x], [tx],
    )
    assert rel_err(to_np64(jx), to_np64(ref)) < 1e-5
    # scales and biases enter linearly: the JVP is the matmul with the weights
    # dequantized from (ts, tb).
    _, (jsb,) = mx.jvp(f, [x, s, b], [mx.zeros_like(x), ts, tb])
    Wt = to_np64(mx.dequantize(w, ts, tb, group_size=32, bits=4))
    expect = to_np64(x) @ (Wt.T if transpose else Wt)
    assert rel_err(to_np64(jsb), expect) < 1e-5


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_vmap_over_x(axis, device):
    w, s, b = make_weights(72, 128, 64, 4, mx.float32)
    xs = mx.moveaxis(make_x((4, 5, 3, 128), mx.float32), 0, axis)
    f = lambda x: mk.quantized_matmul(x, w, s, b, stream=device)
    out = mx.vmap(f, in_axes=axis, out_axes=0)(xs)
    loop = mx.stack([f(mx.take(xs, i, axis=axis)) for i in range(4)])
    assert out.shape == loop.shape
    assert rel_err(to_np64(out), to_np64(loop)) < 1e-6


def test_vmap_over_weights_is_refused(device):
    w, s, b = make_weights(72, 128, 64, 4, mx.float32)
    x = make_x((3, 128), mx.float32)
    f = lambda w, s, b: mk.quantized_matmul(x, w, s, b, stream=device)
    with pytest.raises(NotImplementedError, match="vmap over w"):
        mx.vmap(f, in_axes=(0, 0, 0))(mx.stack([w, w]), mx.stack([s, s]), mx.stack([b, b]))


def test_compile(device):
    w, s, b = make_weights(72, 128, 64, 4, mx.float16)
    f = lambda x: mk.quantized_matmul(x, w, s, b, stream=device) * 2
    x = make_x((3, 128), mx.float16)
    assert np.array_equal(np.array(mx.compile(f)(x)), np.array(f(x)))


def test_compile_shapeless(device):
    w, s, b = make_weights(72, 128, 64, 4, mx.float32)
    f = lambda x: mk.quantized_matmul(x, w, s, b, stream=device) + 1
    cf = mx.compile(f, shapeless=True)
    for M in (1, 5, 17):  # one trace, new shapes through output_shapes
        x = make_x((M, 128), mx.float32)
        out = cf(x)
        assert out.shape == (M, 72)
        assert rel_err(to_np64(out), to_np64(f(x))) < 1e-6


def test_compile_keeps_distinct_ops_apart(device):
    """is_equivalent must tell transpose=True from transpose=False on the same inputs."""
    K = 128
    w, s, b = make_weights(K, K, 64, 4, mx.float32)  # square: valid both ways
    x = make_x((3, K), mx.float32)

    def f(x):
        return mk.quantized_matmul(x, w, s, b, transpose=True, stream=device) - mk.quantized_matmul(
            x, w, s, b, transpose=False, stream=device
        )

    eager, compiled = to_np64(f(x)), to_np64(mx.compile(f)(x))
    assert np.abs(eager).max() > 1e-2  # the two really differ
    assert rel_err(compiled, eager) < 1e-6
