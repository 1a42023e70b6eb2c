"""Parity of mlx_kernels.flash_attention with mx.fast.scaled_dot_product_attention.

Every case compares against MLX's op on the same stream and against a float64
NumPy reference (tolerances.py). Outputs are poisoned with NaN before the
kernel runs (MLX_KERNELS_POISON_OUTPUTS, set in conftest), so an element the
kernel fails to write fails the test (assert_parity requires finite values).

The grid covers every value of every axis and the interactions that change
the kernel's path: lengths x masks (tiles, padding, causal skipping), head
dims x dtypes x masks (inner loops and conversions), GQA ratios x decode and
prefill x batch (row grouping, split-key decode), mask shapes (broadcast
strides), non-contiguous inputs, fully masked rows.
"""

import os

import mlx.core as mx
import numpy as np
import pytest

import mlx_kernels as mk
from attn_cases import check, make, make_mask, make_qkv, reference64, sdpa
from tolerances import ATTN_MLX_FLOOR, ATTN_REF64, rel_err, to_np64

DTYPES = [mx.float32, mx.float16, mx.bfloat16]
DTYPE_IDS = ["f32", "f16", "bf16"]
LENGTHS = [1, 7, 33, 128, 257]
MASKS = [None, "causal", "bool", "additive"]
HEAD_DIMS = [64, 80, 96, 128, 256]


# --- Lengths x masks: every (qL, kL) pair ----------------------------------
def _length_cases():
    for qL in LENGTHS:
        for kL in LENGTHS:
            for mask in MASKS:
                if mask == "causal" and qL > kL:
                    continue  # covered by test_causal_more_queries_than_keys
                yield pytest.param(qL, kL, mask, id=f"q{qL}-k{kL}-{mask}")


@pytest.mark.parametrize("qL,kL,mask", list(_length_cases()))
def test_lengths(qL, kL, mask, device):
    B, Hq, Hkv, D = 1, 4, 2, 64
    q, k, v = make_qkv(B, Hq, Hkv, qL, kL, D, mx.float32)
    check(q, k, v, make_mask(mask, (B, Hq, qL, kL), mx.float32), device, f"qL={qL} kL={kL}")


# --- Head dims x dtypes x masks ---------------------------------------------
@pytest.mark.parametrize("mask", MASKS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("D", HEAD_DIMS)
def test_head_dims_dtypes(D, dtype, mask, device):
    B, Hq, Hkv, qL, kL = 3, 4, 2, 33, 128
    q, k, v = make_qkv(B, Hq, Hkv, qL, kL, D, dtype)
    check(q, k, v, make_mask(mask, (B, 1, qL, kL), dtype), device, f"D={D}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("D", HEAD_DIMS)
def test_decode_head_dims_dtypes(D, dtype, device):
    """qL = 1 against a long cache, few KV heads: the split-key decode path."""
    q, k, v = make_qkv(1, 4, 1, 1, 1024, D, dtype)
    check(q, k, v, None, device, f"D={D}")


@pytest.mark.parametrize("dtype", [mx.float32, mx.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("D,kL", [(64, 40000), (128, 40000), (256, 16384)])
def test_decode_many_splits(D, kL, dtype, device):
    """A decode whose CUDA plan splits the keys 64-125 ways: the merge pass
    takes several rounds of splits a warp. The plan gives these 2-row cases
    the 8-warp merge (64 splits a round at D <= 128, 32 at D = 256);
    MLX_KERNELS_ATTN_MERGE_WIDE=0 runs them through the 4-warp one (both
    passed on the H100 in session 19)."""
    splits = mk._ext.plan_cuda_flash_attention(1, 2, 1, 1, kL, D, "float16", "none", 132)["splits"]
    assert splits > (64 if D <= 128 else 32)
    q, k, v = make_qkv(1, 2, 1, 1, kL, D, dtype)
    check(q, k, v, None, device, f"D={D} kL={kL}")


# --- GQA / MQA x decode and prefill x batch ---------------------------------
GQA_SHAPES = [  # (B, qL, kL)
    (1, 1, 1024),  # decode, split over keys when few KV heads
    (1, 7, 1024),  # few queries, split over keys, causal chunks trimmed
    (3, 1, 257),  # decode, batched
    (3, 7, 33),  # short prefill / speculative decode
    (1, 128, 257),  # prefill
]


@pytest.mark.parametrize("mask", [None, "causal", "bool"], ids=str)
@pytest.mark.parametrize("B,qL,kL", GQA_SHAPES, ids=lambda x: str(x))
@pytest.mark.parametrize("ratio", [1, 2, 4, 8])
def test_gqa(ratio, B, qL, kL, mask, device):
    Hq, D = 8, 128
    Hkv = Hq // ratio
    q, k, v = make_qkv(B, Hq, Hkv, qL, kL, D, mx.float32)
    check(q, k, v, make_mask(mask, (B, Hq, qL, kL), mx.float32), device, f"Hq={Hq} Hkv={Hkv}")


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("ratio", [1, 4, 8])
def test_gqa_half(ratio, dtype, device):
    q, k, v = make_qkv(3, 8, 8 // ratio, 7, 257, 128, dtype)
    check(q, k, v, "causal", device)


@pytest.mark.parametrize("Hq,Hkv,qL", [(16, 1, 5), (96, 1, 3), (24, 8, 9)], ids=["g16", "g96", "g3"])
def test_large_and_odd_groups(Hq, Hkv, qL, device):
    """Groups wider than a task's row target, and groups of 3 (rows not a multiple of 16)."""
    q, k, v = make_qkv(1, Hq, Hkv, qL, 200, 64, mx.float32)
    check(q, k, v, "causal", device)


def test_realistic_prefill(device):
    """A model-like prefill: 8 heads, D = 128, float16, causal."""
    q, k, v = make_qkv(1, 8, 8, 257, 257, 128, mx.float16)
    check(q, k, v, "causal", device)


# --- Mask shapes and dtypes -----------------------------------------------------
MASK_SHAPES = [
    (3, 4, 7, 300),  # full
    (3, 1, 7, 300),  # per batch
    (1, 4, 1, 300),  # per head, per key
    (7, 300),  # per query and key
    (300,),  # per key
    (),  # scalar
]


@pytest.mark.parametrize("shape", MASK_SHAPES, ids=lambda s: "x".join(map(str, s)) or "scalar")
@pytest.mark.parametrize(
    "kind,dtype",
    [("bool", mx.float32), ("bool", mx.bfloat16), ("additive", mx.float32), ("additive", mx.float16)],
    ids=["bool-f32", "bool-bf16", "add-f32", "add-f16"],
)
def test_mask_shapes(kind, dtype, shape, device):
    q, k, v = make_qkv(3, 4, 2, 7, 300, 64, dtype)
    check(q, k, v, make_mask(kind, shape, dtype), device, f"mask {shape}")


@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_mask_split_decode(kind, device):
    """Array masks through the split-key decode path."""
    q, k, v = make_qkv(1, 8, 1, 1, 1500, 128, mx.float32)
    check(q, k, v, make_mask(kind, (1, 8, 1, 1500), mx.float32), device)


@pytest.mark.parametrize(
    "q_dtype,mask_dtype",
    [
        (mx.float32, mx.float16),
        (mx.float32, mx.bfloat16),
        (mx.float16, mx.float16),
        (mx.bfloat16, mx.bfloat16),
        (mx.float32, mx.int32),
        (mx.float16, mx.int8),
    ],
    ids=["f32-f16", "f32-bf16", "f16-f16", "bf16-bf16", "f32-int32", "f16-int8"],
)
def test_additive_mask_dtypes(q_dtype, mask_dtype, device):
    """As MLX: any mask dtype that promotes to q's dtype is accepted."""
    q, k, v = make_qkv(1, 4, 4, 33, 65, 64, q_dtype)
    if mx.issubdtype(mask_dtype, mx.integer):
        mask = mx.random.randint(-3, 3, (33, 65)).astype(mask_dtype)
    else:
        mask = make((33, 65), mask_dtype)
    out = mk.flash_attention(q, k, v, scale=0.125, mask=mask, stream=device)
    ref = sdpa(q, k, v, scale=0.125, mask=mask, stream=device)
    assert out.dtype == ref.dtype == q_dtype
    from tolerances import ATTN_MLX_FLOOR, rel_err

    assert rel_err(to_np64(out), to_np64(ref)) < ATTN_MLX_FLOOR[q_dtype]


def test_scale(device):
    q, k, v = make_qkv(1, 2, 2, 33, 65, 64, mx.float32)
    for scale in (1.0, 0.01, 3):
        check(q, k, v, "causal", device, f"scale={scale}", scale=scale)


# --- Non-contiguous inputs ---------------------------------------------------------
def test_kv_cache_slice(device):
    """k_cache[:, :, :kL]: read in place through the strides."""
    B, H, cap, D = 2, 4, 512, 128
    k_cache = make((B, H, cap, D), mx.float16)
    v_cache = make((B, H, cap, D), mx.float16)
    for kL in (1, 33, 300):
        k, v = k_cache[:, :, :kL], v_cache[:, :, :kL]
        q = make((B, H, 1, D), mx.float16)
        check(q, k, v, None, device, f"kL={kL}")
        q = make((B, H, 7, D), mx.float16)
        check(q, k, v, "causal", device, f"kL={kL}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_transposed_views(dtype, device):
    """x.reshape(B, L, H, D).transpose(0, 2, 1, 3), the layout of a projection."""
    B, L, Hq, Hkv, D = 2, 45, 8, 2, 96
    q = make((B, L, Hq * D), dtype).reshape(B, L, Hq, D).transpose(0, 2, 1, 3)
    k = make((B, L, Hkv * D), dtype).reshape(B, L, Hkv, D).transpose(0, 2, 1, 3)
    v = make((B, L, Hkv * D), dtype).reshape(B, L, Hkv, D).transpose(0, 2, 1, 3)
    check(q, k, v, "causal", device)
    check(q[:, :, -1:], k, v, None, device, "decode")


def test_other_strides(device):
    """A non-contiguous last axis (gathered), negative strides, broadcast batch."""
    q, k, v = make_qkv(2, 4, 2, 9, 70, 64, mx.float32)
    check(q, k[..., ::-1], v[..., ::-1], None, device, "reversed last axis")
    check(q[:, :, ::-1], k[:, :, ::-1], v, "causal", device, "reversed rows")
    kt = make((2, 2, 64, 70), mx.float32)
    check(q, kt.swapaxes(-1, -2), v, None, device, "k transposed in memory")
    k1, v1 = make((1, 2, 70, 64), mx.float32), make((1, 2, 70, 64), mx.float32)
    check(q, mx.broadcast_to(k1, (2, 2, 70, 64)), mx.broadcast_to(v1, (2, 2, 70, 64)), None, device, "broadcast batch")
    check(q[:, ::2], k[:, ::2], v[:, ::2], None, device, "every other head")


# --- Fully masked rows ---------------------------------------------------------------
def test_fully_masked_bool_rows(device):
    """MLX gives such a row the mean of v (masked scores are finfo.min, not -inf)."""
    B, H, qL, kL, D = 1, 2, 9, 200, 64
    q, k, v = make_qkv(B, H, H, qL, kL, D, mx.float32)
    mask = np.random.default_rng(0).uniform(size=(B, H, qL, kL)) < 0.5
    mask[0, 0, 3, :] = False
    mask[0, 1, 0, :] = False
    mask = mx.array(mask)
    out = check(q, k, v, mask, device)
    mean_v = to_np64(v).mean(axis=2)
    np.testing.assert_allclose(to_np64(out)[0, 0, 3], mean_v[0, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_np64(out)[0, 1, 0], mean_v[0, 1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("qL,kL", [(7, 7), (16, 300), (1, 300)])
def test_fully_masked_bool_rows_half_precision(qL, kL, dtype, device):
    """A left-padded batch in half precision (mlx-lm's BatchKVCache: a padding
    query sees no key). Ours gives such a row the mean of v in every dtype, as
    MLX's CPU op does in every dtype and its float32 GPU paths do. MLX's CUDA
    op hands float16/bfloat16 prefill with an array mask to cuDNN, which
    returns 0 for that row (H200, session 17, diag_masked_rows_gpu.py); so the
    row is checked against MLX's CPU op and the mean of v, the rest of the
    batch against MLX on the device and float64."""
    B, H, D = 2, 4, 64
    q, k, v = make_qkv(B, H, H, qL, kL, D, dtype)
    keep = np.random.default_rng(2).uniform(size=(B, 1, qL, kL)) < 0.6
    keep[..., 0] = True  # every other row sees a key
    keep[1, 0, 0, :] = False  # batch 1, query 0: every key masked
    mask = mx.array(keep)
    scale = D**-0.5
    out = to_np64(mk.flash_attention(q, k, v, scale=scale, mask=mask, stream=device))
    assert np.all(np.isfinite(out))
    masked = out[1, :, 0]
    assert rel_err(masked, to_np64(v)[1].mean(axis=1)) <= ATTN_REF64[dtype]
    mlx_cpu = to_np64(sdpa(q, k, v, scale=scale, mask=mask, stream=mx.cpu))[1, :, 0]
    assert rel_err(masked, mlx_cpu) <= ATTN_MLX_FLOOR[dtype]
    check(q[:1], k[:1], v[:1], mask[:1], device, "batch 0")
    if qL > 1:
        check(q[1:, :, 1:], k[1:], v[1:], mask[1:, :, 1:], device, "batch 1, queries 1..")


@pytest.mark.parametrize("qL,kL", [(9, 4), (33, 1), (300, 257)])
def test_causal_more_queries_than_keys(qL, kL, device):
    """Bottom-right alignment: the first qL - kL queries see no key (mean of v, as MLX)."""
    q, k, v = make_qkv(1, 4, 2, qL, kL, 64, mx.float32)
    check(q, k, v, "causal", device)


def test_additive_minus_inf_row_is_nan_as_mlx(device):
    q, k, v = make_qkv(1, 2, 2, 5, 150, 64, mx.float32)
    mask = np.zeros((5, 150), np.float32)
    mask[2, :] = -np.inf
    mask[3, :100] = -np.inf  # partly -inf: finite result
    mask = mx.array(mask)
    out = np.array(mk.flash_attention(q, k, v, scale=0.125, mask=mask, stream=device))
    ref = np.array(sdpa(q, k, v, scale=0.125, mask=mask, stream=device))
    assert np.isnan(ref[:, :, 2]).all() and np.isnan(out[:, :, 2]).all()
    rows = [0, 1, 3, 4]
    np.testing.assert_allclose(out[:, :, rows], ref[:, :, rows], rtol=1e-4, atol=1e-5)


def test_no_keys_gives_zeros_as_mlx(device):
    q = make((1, 2, 3, 64), mx.float32)
    k = v = mx.zeros((1, 2, 0, 64))
    out = mk.flash_attention(q, k, v, scale=0.1, stream=device)
    ref = sdpa(q, k, v, scale=0.1, stream=device)
    assert out.shape == ref.shape
    assert np.array_equal(np.array(out), np.array(ref))


def test_empty_outputs(device):
    for B, qL in ((0, 4), (1, 0)):
        q = mx.zeros((B, 2, qL, 64))
        k = v = mx.zeros((B, 2, 5, 64))
        out = mk.flash_attention(q, k, v, scale=0.1, stream=device)
        mx.eval(out)
        assert out.shape == (B, 2, qL, 64)


def test_outputs_are_poisoned():
    """The suite runs with poisoned outputs: an unwritten element would be NaN."""
    assert os.environ.get("MLX_KERNELS_POISON_OUTPUTS") == "1"
