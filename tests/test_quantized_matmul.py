"""Parity of mlx_kernels.quantized_matmul with mx.quantized_matmul.

Every case compares against MLX's op on the same stream and against a float64
NumPy reference (tolerances.py). Outputs are poisoned with NaN before the
kernel runs (MLX_KERNELS_POISON_OUTPUTS, set in conftest), so an element the
kernel fails to write fails the test.
"""

import itertools
import math

import mlx.core as mx
import numpy as np
import pytest

import mlx_kernels as mk
from qmm_cases import make_weights, make_x, mlx_reference, reference64, simt_takes
from tolerances import assert_parity, rel_err, to_np64

DTYPES = [mx.float32, mx.float16, mx.bfloat16]
DTYPE_IDS = ["f32", "f16", "bf16"]
M_VALUES = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 32, 33, 64]


def check(x, w, scales, biases, transpose, group_size, bits, device, what):
    out = mk.quantized_matmul(
        x, w, scales, biases, transpose=transpose, group_size=group_size,
        bits=bits, stream=device,
    )
    ref64 = reference64(x, w, scales, biases, transpose, group_size, bits)
    ref = mlx_reference(x, w, scales, biases, transpose, group_size, bits, device, ref64)
    assert_parity(out, ref, ref64, x.dtype, what)
    return out


# --- The M sweep: every decode batch size, every dtype, both bit widths -----
@pytest.mark.parametrize("transpose", [True, False], ids=["T", "N"])
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("M", M_VALUES)
def test_m_sweep(M, dtype, bits, transpose, device):
    group_size, K = 64, 3 * 64
    N = 72 if transpose else 128
    w, s, b = make_weights(N, K, group_size, bits, dtype, transpose)
    x = make_x((M, K), dtype)
    check(x, w, s, b, transpose, group_size, bits, device, f"M={M}")


# --- Shapes and group sizes: N not a power of two, K in {gs, 3 gs, 4096} ----
def _shape_cases():
    for gs, bits, transpose in itertools.product([32, 64, 128], [4, 8], [True, False]):
        n_values = [24, 72, 1000] if transpose else [3 * gs, 1024]
        for N, K in itertools.product(n_values, [gs, 3 * gs, 4096]):
            yield pytest.param(N, K, gs, bits, transpose, id=f"{'T' if transpose else 'N'}-N{N}-K{K}-gs{gs}-b{bits}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("N,K,group_size,bits,transpose", list(_shape_cases()))
def test_shapes(N, K, group_size, bits, transpose, dtype, device):
    # Rows: a few for the large K (MLX's own float16 CPU path is slow), more otherwise.
    M = 3 if K == 4096 else 17
    w, s, b = make_weights(N, K, group_size, bits, dtype, transpose)
    x = make_x((M, K), dtype)
    check(x, w, s, b, transpose, group_size, bits, device, f"N={N} K={K}")


# --- Decode rows over long K: the CUDA bulk-copy kernel's territory ----------
# (M <= 16, K a multiple of 8 groups and at least 512 4-bit / 256 8-bit values,
# 30 KB of weights an SM). On the GPU each case runs five times: planned for
# the device's SMs (these sizes then take the mma kernel), for one SM and for
# four (set_cuda_quantized_matmul_plan_sms) with the k-slice kernel kept off
# the bulk kernel's weights, where the bulk kernel runs with every kind of
# split: one SM gives clusters of up to 8 k parts, four SMs one k part with
# several tiles a warp, so that the stage ring wraps around (72x2048, 74 KB,
# is below the bulk kernel's 30 KB an SM on four: k-slice); and for one and
# four SMs with the k-slice kernel taking them all (the path of mid-sized
# weights on a full GPU: up to 4 rounds of loads a warp, at most 4 warps).
# The forced plans keep simt_qmv off (set_cuda_quantized_matmul_simt_max_kb(0)),
# so that M = 1 on weights of at most 1 MB runs those kernels too; the
# device's plan gives it to simt_qmv.
BULK_CASES = [
    (1000, 4096, 64, 4),  # N tail (1000 = 62.5 row tiles)
    (40, 8192, 64, 4),  # 3 row tiles: many k parts, a cluster split
    (72, 2048, 32, 4),  # 32-value groups: 16 groups a stage
    (200, 4096, 128, 4),  # 1024 values a stage
    (1000, 2048, 64, 8),
    (40, 4096, 32, 8),
    (72, 4096, 128, 8),  # 8-bit, 128-value groups: 1 KB a row a stage
]
# (plan SMs, KB of packed weights an SM up to which the k-slice kernel takes
# the bulk kernel's problems: -1 the default, 0 none, 1 << 20 all)
BULK_PLANS = [(0, -1), (1, 0), (4, 0), (1, 1 << 20), (4, 1 << 20)]


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("N,K,group_size,bits", BULK_CASES, ids=lambda v: str(v))
def test_decode_rows_long_k(N, K, group_size, bits, dtype, backend, device):
    w, s, b = make_weights(N, K, group_size, bits, dtype)
    plans = BULK_PLANS if backend == "gpu" else BULK_PLANS[:1]
    try:
        # (test_cuda_qmm_plan.py checks which kernel each of these plans picks)
        for sms, kslice_kb in plans:
            mk._ext.set_cuda_quantized_matmul_plan_sms(sms)
            mk._ext.set_cuda_quantized_matmul_kslice_over_bulk_kb_per_sm(kslice_kb)
            mk._ext.set_cuda_quantized_matmul_simt_max_kb(0 if sms else -1)
            for M in (1, 2, 3, 4, 5, 8, 9, 16):
                x = make_x((M, K), dtype)
                check(x, w, s, b, True, group_size, bits, device,
                      f"M={M} plan SMs={sms or 'device'} k-slice KB an SM={kslice_kb}")
    finally:
        mk._ext.set_cuda_quantized_matmul_plan_sms(0)
        mk._ext.set_cuda_quantized_matmul_kslice_over_bulk_kb_per_sm(-1)
        mk._ext.set_cuda_quantized_matmul_simt_max_kb(-1)


# --- Decode rows on small weights: the CUDA k-slice kernel's territory --------
# (M <= 16, weights below the bulk kernel's share, at most 32 k-steps of 4 x 16
# bytes a row, 16 at M > 8: a block's warps split K over one 16-row tile, one
# round of loads each; at M = 1 on weights of at most 1 MB, simt_qmv instead).
# The cases vary the warps a block (1-8), the k-steps a warp (1-4, uneven),
# partial last steps, row tails and one or two 8-row tiles of x. M = 1 runs
# twice on the GPU: as planned, and with simt_qmv off (the k-slice kernel).
KSLICE_CASES = [
    (24, 32, 32, 4),  # one partial k-step, one warp, 8 of 16 rows
    (72, 96, 32, 8),  # 8-bit: 2 k-steps of 64 values, the last one partial
    (1000, 1088, 64, 4),  # 9 k-steps over 8 warps (warp 0 takes two), row tail
    (136, 3072, 64, 4),  # 24 k-steps: 3 a warp
    (40, 2048, 128, 8),  # 8-bit: 32 k-steps, a full batch of 4 a warp
    (1024, 4096, 32, 4),  # 32 k-steps, 32-value groups (tc_qmm at M > 8)
]


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("N,K,group_size,bits", KSLICE_CASES, ids=lambda v: str(v))
def test_decode_rows_small_weights(N, K, group_size, bits, dtype, backend, device):
    w, s, b = make_weights(N, K, group_size, bits, dtype)
    steps = math.ceil(K * bits / 512)  # k-steps of 4 x 16 bytes a row
    simt = simt_takes(1, N, K, bits)  # simt_qmv's weights at M = 1
    runs = [(M, -1) for M in (1, 2, 5, 8, 9, 13, 16)]
    if backend == "gpu" and simt:
        runs.insert(1, (1, 0))  # M = 1 with simt_qmv off: the k-slice kernel
    try:
        for M, simt_kb in runs:
            mk._ext.set_cuda_quantized_matmul_simt_max_kb(simt_kb)
            # the k-slice kernel on a 132-SM GPU (plan: plain C++) wherever one
            # round of loads of its 8 warps covers K: 32 k-steps at M <= 8, 16 above
            plan = mk._ext.plan_cuda_quantized_matmul(M, N, K, group_size, bits, True, "float16")
            if M == 1 and simt and simt_kb:
                assert plan["kernel"] == "simt_small_m", plan["kernel"]
            else:
                kslice = steps <= (32 if M <= 8 else 16)
                assert (plan["kernel"] == "tensor_core_kslice") == kslice, (M, plan["kernel"])
            x = make_x((M, K), dtype)
            check(x, w, s, b, True, group_size, bits, device, f"M={M} simt_qmv KB={simt_kb}")
    finally:
        mk._ext.set_cuda_quantized_matmul_simt_max_kb(-1)


def test_large_decode_shape(device):
    """A real layer shape through every kernel path (float32: MLX is fast there)."""
    N, K = 1536, 4096
    w, s, b = make_weights(N, K, 64, 4, mx.float32)
    for M in (1, 8, 9, 64):
        check(make_x((M, K), mx.float32), w, s, b, True, 64, 4, device, f"M={M}")


# --- Batched and degenerate x ------------------------------------------------
@pytest.mark.parametrize("transpose", [True, False], ids=["T", "N"])
@pytest.mark.parametrize("shape", [(128,), (2, 3, 128), (2, 1, 3, 128), (1, 1, 128)])
def test_batched_x(shape, transpose, device):
    N = 72 if transpose else 128
    w, s, b = make_weights(N, 128, 64, 4, mx.float16, transpose)
    x = make_x(shape, mx.float16)
    out = check(x, w, s, b, transpose, 64, 4, device, f"x{shape}")
    assert out.shape == shape[:-1] + (N,)


@pytest.mark.parametrize("shape", [(0, 128), (2, 0, 128), (0,) + (128,)])
def test_zero_rows(shape, device):
    w, s, b = make_weights(40, 128, 64, 4, mx.float32)
    x = mx.zeros(shape, dtype=mx.float32)
    out = mk.quantized_matmul(x, w, s, b, stream=device)
    ref = mx.quantized_matmul(x, w, s, b, stream=device)
    mx.eval(out)
    assert out.shape == ref.shape == shape[:-1] + (40,)
    assert out.dtype == ref.dtype


@pytest.mark.parametrize(
    "x_dtype,s_dtype",
    [(mx.float16, mx.float32), (mx.bfloat16, mx.float16), (mx.float32, mx.bfloat16)],
)
def test_mixed_dtypes_follow_mlx(x_dtype, s_dtype, device):
    w, s, b = make_weights(64, 128, 64, 4, s_dtype)
    x = make_x((5, 128), x_dtype)
    out = mk.quantized_matmul(x, w, s, b, stream=device)
    ref = mx.quantized_matmul(x, w, s, b, stream=device)
    assert out.dtype == ref.dtype
    assert rel_err(to_np64(out), to_np64(ref)) < 2e-2


# --- Non-contiguous inputs ----------------------------------------------------
@pytest.mark.parametrize("transpose", [True, False], ids=["T", "N"])
def test_non_contiguous_inputs(transpose, device):
    gs, bits, K, N = 64, 4, 256, 128
    w, s, b = make_weights(N, K, gs, bits, mx.float16, transpose)
    rows, cols = w.shape
    # x: a column slice of a wider array, then a transposed view.
    x_wide = make_x((5, K + 64), mx.float16)
    x_slice = x_wide[:, 32 : 32 + K]
    x_t = make_x((K, 5), mx.float16).T
    # w: a slice of a wider packed matrix; scales: a transposed view;
    # biases: every other row of an interleaved array.
    w_nc = mx.concatenate([w, w], axis=1)[:, :cols]
    s_nc = mx.array(np.ascontiguousarray(np.array(s.astype(mx.float32)).T)).astype(mx.float16).T
    b_nc = mx.stack([b, mx.zeros_like(b)], axis=1).reshape(-1, b.shape[1])[::2]
    assert s_nc.shape == s.shape and b_nc.shape == b.shape and w_nc.shape == w.shape
    for x in (x_slice, x_t):
        out = check(x, w_nc, s_nc, b_nc, transpose, gs, bits, device, "non-contiguous")
        plain = mk.quantized_matmul(mx.array(np.array(x)), w, s, b, transpose=transpose, stream=device)
        assert np.array_equal(np.array(out), np.array(plain))


def test_broadcast_x(device):
    w, s, b = make_weights(64, 128, 64, 4, mx.float32)
    x = mx.broadcast_to(make_x((1, 128), mx.float32), (4, 128))
    check(x, w, s, b, True, 64, 4, device, "broadcast x")


# --- The binding itself -------------------------------------------------------
def test_array_round_trip_through_binding(device):
    w, s, b = make_weights(32, 64, 32, 4, mx.float32)
    x = make_x((2, 64), mx.float32)
    out = mk.quantized_matmul(x, w, s, b, group_size=32, stream=device)
    assert isinstance(out, mx.array)
    # The returned array is a live MLX graph node: it composes with MLX ops.
    total = mx.sum(out * 2.0)
    assert np.isclose(total.item(), 2.0 * np.array(out).sum(), rtol=1e-5)
