"""Transforms of flash_attention: grad (vs MLX's gradients of its own op), jvp,
vmap, compile (also shapeless)."""

import mlx.core as mx
import numpy as np
import pytest

import mlx_kernels as mk
from attn_cases import make, make_mask, make_qkv, sdpa
from tolerances import ATTN_GRAD, rel_err, to_np64


def _grads(f, q, k, v, mask, cot, argnums):
    def loss(q, k, v, *m):
        return mx.sum(cot * f(q, k, v, scale=q.shape[-1] ** -0.5, mask=m[0] if m else mask))

    if 3 in argnums:
        return mx.grad(loss, argnums=argnums)(q, k, v, mask)
    return mx.grad(loss, argnums=argnums)(q, k, v)


@pytest.mark.parametrize("mask", [None, "causal", "bool", "additive"], ids=str)
@pytest.mark.parametrize("Hq,Hkv,qL,kL", [(4, 4, 7, 33), (8, 2, 33, 65), (4, 1, 1, 40)], ids=["mha", "gqa", "mqa-decode"])
def test_grad_matches_mlx(Hq, Hkv, qL, kL, mask, device):
    B, D = 2, 64
    q, k, v = make_qkv(B, Hq, Hkv, qL, kL, D, mx.float32)
    m = make_mask(mask, (B, 1, qL, kL), mx.float32)
    cot = make((B, Hq, qL, D), mx.float32)
    argnums = (0, 1, 2, 3) if mask == "additive" else (0, 1, 2)
    ours = _grads(lambda *a, **kw: mk.flash_attention(*a, **kw, stream=device), q, k, v, m, cot, argnums)
    theirs = _grads(lambda *a, **kw: sdpa(*a, **kw, stream=device), q, k, v, m, cot, argnums)
    for name, g, r in zip(("q", "k", "v", "mask"), ours, theirs):
        assert g.shape == r.shape and g.dtype == r.dtype, name
        assert rel_err(to_np64(g), to_np64(r)) < ATTN_GRAD[mx.float32], name


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16], ids=["f16", "bf16"])
def test_grad_half(dtype, device):
    q, k, v = make_qkv(1, 4, 2, 17, 40, 128, dtype)
    cot = make((1, 4, 17, 128), dtype)
    ours = _grads(lambda *a, **kw: mk.flash_attention(*a, **kw, stream=device), q, k, v, "causal", cot, (0, 1, 2))
    theirs = _grads(lambda *a, **kw: sdpa(*a, **kw, stream=device), q, k, v, "causal", cot, (0, 1, 2))
    for name, g, r in zip("qkv", ours, theirs):
        assert g.dtype == r.dtype == dtype, name
        assert rel_err(to_np64(g), to_np64(r)) < ATTN_GRAD[dtype], name


def test_grad_fully_masked_rows(device):
    """Bool rows with no key: uniform weights, the gradient flows as in MLX."""
    q, k, v = make_qkv(1, 2, 2, 9, 4, 64, mx.float32)  # causal, qL > kL
    cot = make((1, 2, 9, 64), mx.float32)
    ours = _grads(lambda *a, **kw: mk.flash_attention(*a, **kw, stream=device), q, k, v, "causal", cot, (0, 1, 2))
    theirs = _grads(lambda *a, **kw: sdpa(*a, **kw, stream=device), q, k, v, "causal", cot, (0, 1, 2))
    for name, g, r in zip("qkv", ours, theirs):
        assert rel_err(to_np64(g), to_np64(r)) < 1e-4, name


def test_jvp(device):
    B, Hq, Hkv, qL, kL, D = 1, 4, 2, 7, 33, 64
    prim = make_qkv(B, Hq, Hkv, qL, kL, D, mx.float32)
    tans = make_qkv(B, Hq, Hkv, qL, kL, D, mx.float32)
    f_ours = lambda q, k, v: mk.flash_attention(q, k, v, scale=0.125, mask="causal", stream=device)
    f_mlx = lambda q, k, v: sdpa(q, k, v, scale=0.125, mask="causal", stream=device)
    _, (ours,) = mx.jvp(f_ours, list(prim), list(tans))
    _, (ref,) = mx.jvp(f_mlx, list(prim), list(tans))
    assert rel_err(to_np64(ours), to_np64(ref)) < 1e-4


# --- vmap ---------------------------------------------------------------------------
def _loop(f, args, in_axes):
    n = next(a.shape[ax] for a, ax in zip(args, in_axes) if ax is not None)
    outs = []
    for i in range(n):
        outs.append(f(*[a if ax is None else mx.take(a, i, axis=ax) for a, ax in zip(args, in_axes)]))
    return mx.stack(outs)


@pytest.mark.parametrize(
    "in_axes",
    [(0, 0, 0), (1, 1, 1), (4, 2, 3), (0, None, None), (None, 0, 0)],
    ids=["all-0", "all-1", "mixed-axes", "q-only", "kv-only"],
)
@pytest.mark.parametrize("mask", [None, "causal"], ids=str)
def test_vmap(in_axes, mask, device):
    N, B, Hq, Hkv, qL, kL, D = 3, 2, 4, 2, 5, 40, 64
    shapes = [(B, Hq, qL, D), (B, Hkv, kL, D), (B, Hkv, kL, D)]
    args = []
    for shape, ax in zip(shapes, in_axes):
        a = make(shape if ax is None else (N,) + shape, mx.float32)
        args.append(a if ax is None else mx.moveaxis(a, 0, ax))
    f = lambda q, k, v: mk.flash_attention(q, k, v, scale=0.125, mask=mask, stream=device)
    out = mx.vmap(f, in_axes=in_axes)(*args)
    loop = _loop(f, args, in_axes)
    assert out.shape == loop.shape == (N, B, Hq, qL, D)
    assert rel_err(to_np64(out), to_np64(loop)) < 1e-6


@pytest.mark.parametrize("mask_axis", [None, 0, 2])
def test_vmap_with_array_mask(mask_axis, device):
    N, B, H, qL, kL, D = 3, 1, 2, 5, 40, 64
    q = make((N, B, H, qL, D), mx.float32)
    k, v = make((B, H, kL, D), mx.float32), make((B, H, kL, D), mx.float32)
    mask = make((qL, kL), mx.float32) if mask_axis is None else mx.moveaxis(make((N, qL, kL), mx.float32), 0, mask_axis)
    f = lambda q, m: mk.flash_attention(q, k, v, scale=0.125, mask=m, stream=device)
    out = mx.vmap(f, in_axes=(0, mask_axis))(q, mask)
    loop = _loop(f, [q, mask], (0, mask_axis))
    assert rel_err(to_np64(out), to_np64(loop)) < 1e-6


def test_vmap_of_grad(device):
    q = make((3, 1, 2, 5, 64), mx.float32)
    k, v = make((1, 2, 9, 64), mx.float32), make((1, 2, 9, 64), mx.float32)
    g = lambda f: mx.grad(lambda q: f(q, k, v, scale=0.125, mask="causal").sum())
    ours = mx.vmap(g(lambda *a, **kw: mk.flash_attention(*a, **kw, stream=device)))(q)
    ref = mx.vmap(g(lambda *a, **kw: sdpa(*a, **kw, stream=device)))(q)
    assert rel_err(to_np64(ours), to_np64(ref)) < 1e-4


# --- compile --------------------------------------------------------------------------
@pytest.mark.parametrize("mask", [None, "causal", "bool"], ids=str)
def test_compile(mask, device):
    q, k, v = make_qkv(2, 4, 2, 7, 33, 64, mx.float16)
    m = make_mask(mask, (7, 33), mx.float16)
    f = lambda q, k, v: mk.flash_attention(q, k, v, scale=0.125, mask=m, stream=device) * 2
    assert np.array_equal(np.array(mx.compile(f)(q, k, v)), np.array(f(q, k, v)))


@pytest.mark.parametrize("mask", [None, "causal"], ids=str)
def test_compile_shapeless(mask, device):
    f = lambda q, k, v: mk.flash_attention(q, k, v, scale=0.125, mask=mask, stream=device) + 1
    cf = mx.compile(f, shapeless=True)
    for B, qL, kL in ((1, 1, 8), (2, 7, 33), (1, 5, 300)):  # one trace, new shapes via output_shapes
        q, k, v = make_qkv(B, 4, 2, qL, kL, 64, mx.float32)
        out = cf(q, k, v)
        assert out.shape == (B, 4, qL, 64)
        assert rel_err(to_np64(out), to_np64(f(q, k, v))) < 1e-6


def test_compile_keeps_distinct_ops_apart(device):
    """is_equivalent must tell masks and scales apart on the same inputs."""
    q, k, v = make_qkv(1, 2, 2, 9, 9, 64, mx.float32)

    def f(q, k, v):
        a = mk.flash_attention(q, k, v, scale=0.125, stream=device)
        b = mk.flash_attention(q, k, v, scale=0.125, mask="causal", stream=device)
        c = mk.flash_attention(q, k, v, scale=0.5, mask="causal", stream=device)
        return a - 2 * b + c

    eager, compiled = to_np64(f(q, k, v)), to_np64(mx.compile(f)(q, k, v))
    assert np.abs(eager).max() > 1e-2
    assert rel_err(compiled, eager) < 1e-6
