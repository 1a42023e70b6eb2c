"""Inputs and references for flash_attention tests (shared by every backend)."""

import mlx.core as mx
import numpy as np

import mlx_kernels as mk
from tolerances import ATTN_MLX_FLOOR, ATTN_REF64, assert_parity, to_np64

sdpa = mx.fast.scaled_dot_product_attention


def make(shape, dtype):
    a = mx.random.normal(shape).astype(dtype)
    mx.eval(a)
    return a


def make_qkv(B, Hq, Hkv, qL, kL, D, dtype):
    return make((B, Hq, qL, D), dtype), make((B, Hkv, kL, D), dtype), make((B, Hkv, kL, D), dtype)


def make_mask(kind, shape, dtype, density=0.7):
    """kind: None, "causal", "bool" or "additive"; shape broadcastable to [B, Hq, qL, kL]."""
    if kind in (None, "causal"):
        return kind
    if kind == "bool":
        m = mx.random.uniform(shape=shape) < density
    else:
        m = (2.0 * mx.random.normal(shape)).astype(dtype)
    mx.eval(m)
    return m


def reference64(q, k, v, scale, mask):
    """float64 NumPy attention with MLX's mask semantics (masked scores take a
    very low finite value, so a fully masked row averages v)."""
    q64, k64, v64 = to_np64(q), to_np64(k), to_np64(v)
    B, Hq, qL, D = q64.shape
    Hkv, kL = k64.shape[1], k64.shape[2]
    G = Hq // Hkv
    k64 = np.repeat(k64, G, axis=1)
    v64 = np.repeat(v64, G, axis=1)
    s = scale * (q64 @ np.swapaxes(k64, -1, -2))
    low = -1e300
    if isinstance(mask, str):
        assert mask == "causal"
        keep = (np.arange(qL)[:, None] + kL - qL) >= np.arange(kL)[None, :]
        s = np.where(keep, s, low)
    elif mask is not None:
        if mask.dtype == mx.bool_:
            s = np.where(np.array(mask), s, low)
        else:
            s = s + to_np64(mask)
    with np.errstate(invalid="ignore"):
        s = s - s.max(axis=-1, keepdims=True)
        p = np.exp(s)
        p = p / p.sum(axis=-1, keepdims=True)
    return p @ v64


def check(q, k, v, mask, device, what="", scale=None):
    """Ours against MLX's op on the same stream and against float64."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    out = mk.flash_attention(q, k, v, scale=scale, mask=mask, stream=device)
    ref = sdpa(q, k, v, scale=scale, mask=mask, stream=device)
    assert_parity(
        out, ref, reference64(q, k, v, scale, mask), q.dtype, what,
        ref_tol=ATTN_REF64, mlx_floor=ATTN_MLX_FLOOR,
    )
    return out
