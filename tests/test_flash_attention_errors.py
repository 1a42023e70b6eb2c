"""Bad input to flash_attention: a clear exception naming the argument."""

import mlx.core as mx
import numpy as np
import pytest

import mlx_kernels as mk
from attn_cases import make, make_qkv

B, Hq, Hkv, qL, kL, D = 2, 4, 2, 3, 5, 64


@pytest.fixture
def qkv():
    return make_qkv(B, Hq, Hkv, qL, kL, D, mx.float32)


def call(q, k, v, **kw):
    kw.setdefault("scale", 0.125)
    out = mk.flash_attention(q, k, v, **kw)
    mx.eval(out)
    return out


@pytest.mark.parametrize(
    "mutate,exc,match",
    [
        # ranks
        (lambda q, k, v: (q[0], k, v), ValueError, r"q must be 4-D \[B, heads, length, D\]; got shape \(4, 3, 64\)"),
        (lambda q, k, v: (q, k[None], v), ValueError, "k must be 4-D"),
        (lambda q, k, v: (q, k, v[0, 0]), ValueError, "v must be 4-D"),
        # batch, heads, lengths, head dims
        (lambda q, k, v: (q, k[:1], v[:1]), ValueError, "same batch size B"),
        (lambda q, k, v: (q[:1], k, v), ValueError, "same batch size B"),
        (lambda q, k, v: (q, k, v[:, :1]), ValueError, "k and v must have the same number of heads"),
        (lambda q, k, v: (q, k, v[:, :, :4]), ValueError, "k and v must have the same length kL"),
        (lambda q, k, v: (q, k[..., :32], v), ValueError, "same head dimension D"),
        (lambda q, k, v: (q, k, v[..., :32]), ValueError, "same head dimension D"),
        (lambda q, k, v: (q[:, :3], k, v), ValueError, r"query heads \(3\) must be a multiple of the number of key/value heads \(2\)"),
        (lambda q, k, v: (q, k[:, :0], v[:, :0]), ValueError, "must be a multiple"),
        # head dims
        (lambda q, k, v: (q[..., :32], k[..., :32], v[..., :32]), ValueError, "D must be 64, 80, 96, 128 or 256; got 32"),
        (lambda q, k, v: (mx.zeros((1, 2, 3, 100)), mx.zeros((1, 2, 3, 100)), mx.zeros((1, 2, 3, 100))), ValueError, "got 100"),
        # dtypes
        (lambda q, k, v: (q.astype(mx.float16), k, v), TypeError, "q, k and v must have the same dtype; got float16, float32 and float32"),
        (lambda q, k, v: (q, k, v.astype(mx.bfloat16)), TypeError, "same dtype"),
        (lambda q, k, v: (q.astype(mx.int32), k.astype(mx.int32), v.astype(mx.int32)), TypeError, "q must be float32, float16 or bfloat16; got int32"),
        # float64 arrays exist only on the CPU (MLX's GPUs refuse them)
        (lambda q, k, v: tuple(a.astype(mx.float64, stream=mx.cpu) for a in (q, k, v)), TypeError, "got float64"),
        # not arrays
        (lambda q, k, v: (np.array(q), k, v), TypeError, "q must be an mlx.core.array; got numpy.ndarray"),
        (lambda q, k, v: (q, [1.0], v), TypeError, "k must be an mlx.core.array"),
    ],
    ids=[
        "q-3d", "k-5d", "v-2d", "B-kv", "B-q", "Hkv-k-v", "kL-k-v", "D-k", "D-v",
        "Hq-not-multiple", "Hkv-zero", "D-32", "D-100", "mixed-q", "mixed-v", "int", "float64",
        "q-numpy", "k-list",
    ],
)
def test_bad_arguments(qkv, mutate, exc, match):
    with pytest.raises(exc, match=match):
        call(*mutate(*qkv))


@pytest.mark.parametrize(
    "mask,exc,match",
    [
        ("foo", ValueError, "unknown mask 'foo'; mask must be None, \"causal\""),
        ("Causal", ValueError, "unknown mask"),
        ("", ValueError, "unknown mask"),
        ("array", ValueError, "unknown mask"),
        (mx.ones((qL, kL + 1), dtype=mx.bool_), ValueError, r"mask of shape \(3, 6\) cannot be broadcast to \[B, Hq, qL, kL\] = \(2, 4, 3, 5\)"),
        (mx.ones((3, Hq, qL, kL), dtype=mx.bool_), ValueError, "cannot be broadcast"),
        (mx.ones((Hkv, qL, kL), dtype=mx.bool_), ValueError, "cannot be broadcast"),
        (mx.ones((1, 1, 1, qL, kL), dtype=mx.bool_), ValueError, "at most 4 dimensions"),
        (mx.zeros((qL, kL), dtype=mx.float64, stream=mx.cpu), TypeError, "promotes to q's dtype float32; got float64"),
        (mx.zeros((qL, kL), dtype=mx.complex64), TypeError, "got complex64"),
        (1.0, TypeError, "mask must be None, \"causal\" or an mlx.core.array; got builtins.float"),
        (np.ones((qL, kL), bool), TypeError, "got numpy.ndarray"),
    ],
    ids=["unknown", "case", "empty", "array-str", "kL", "B", "heads-3d", "5d", "float64", "complex", "float", "numpy"],
)
def test_bad_mask(qkv, mask, exc, match):
    with pytest.raises(exc, match=match):
        call(*qkv, mask=mask)


@pytest.mark.parametrize(
    "q_dtype,mask_dtype",
    [(mx.float16, mx.float32), (mx.bfloat16, mx.float32), (mx.float16, mx.bfloat16), (mx.bfloat16, mx.float16)],
    ids=["f16-f32", "bf16-f32", "f16-bf16", "bf16-f16"],
)
def test_mask_dtype_must_promote_to_q(q_dtype, mask_dtype):
    """As MLX: a float32 mask is refused for float16 q (it would promote the output)."""
    q, k, v = make_qkv(1, 2, 2, 3, 5, 64, q_dtype)
    with pytest.raises(TypeError, match=f"promotes to q's dtype"):
        call(q, k, v, mask=mx.zeros((3, 5), dtype=mask_dtype))


@pytest.mark.parametrize("scale", ["0.1", None, mx.array(0.1), True, [0.1]], ids=["str", "None", "array", "bool", "list"])
def test_scale_must_be_a_number(qkv, scale):
    with pytest.raises(TypeError, match="scale must be a real number"):
        call(*qkv, scale=scale)


def test_scale_is_required(qkv):
    with pytest.raises(TypeError):
        mk.flash_attention(*qkv)


def test_numpy_scalars_are_numbers(qkv):
    call(*qkv, scale=np.float32(0.125))
    call(*qkv, scale=1)
