"""Tolerances by dtype and the parity check, in one place.

Errors are relative Frobenius norms, ``||a - b|| / ||b||``.

* ``REF64``: our output against a float64 NumPy reference computed from the
  same (rounded) inputs. Our kernels accumulate in float32 and round once at
  the end, so the bound is about the output rounding of the dtype.
* Against MLX's own op in the same dtype we allow MLX's own error: its CPU
  kernels round partial sums to float16/bfloat16 (measured here, K = 4096:
  bfloat16 7e-2, float16 9e-3 against float64; float32 1e-7). So ours must
  agree with MLX within ``MLX_SLACK`` times MLX's distance from the float64
  reference, or within ``MLX_FLOOR``, whichever is larger.
"""

import mlx.core as mx
import numpy as np

REF64 = {mx.float32: 1e-5, mx.float16: 2e-3, mx.bfloat16: 1e-2}
MLX_FLOOR = {mx.float32: 2e-5, mx.float16: 3e-3, mx.bfloat16: 2e-2}
MLX_SLACK = 1.5

# Attention (flash_attention vs mx.fast.scaled_dot_product_attention). Ours
# accumulates in float32 and rounds the output once, so against float64 the
# error is about the output rounding (measured worst, D <= 256, kL <= 1024:
# float32 6e-7, float16 2.2e-4, bfloat16 1.7e-3). MLX's CPU path rounds
# q * scale, the scores and P to the input dtype before its matmuls, so it
# sits further from float64 (float32 1.3e-6, float16 1.1e-3, bfloat16
# 8.2e-3): the MLX comparison uses the same floor-or-slack rule as above.
ATTN_REF64 = {mx.float32: 2e-6, mx.float16: 6e-4, mx.bfloat16: 4e-3}
ATTN_MLX_FLOOR = {mx.float32: 5e-6, mx.float16: 2e-3, mx.bfloat16: 1.2e-2}
# Gradients (vjp) against MLX's gradients of its own op, same dtype.
ATTN_GRAD = {mx.float32: 1e-4, mx.float16: 1e-2, mx.bfloat16: 5e-2}


def rel_err(a, ref):
    a = np.asarray(a, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    denom = np.linalg.norm(ref)
    return np.linalg.norm(a - ref) / (denom if denom > 0 else 1.0)


def to_np64(a):
    return np.array(a.astype(mx.float32)).astype(np.float64)


def assert_parity(out, mlx_out, ref64, dtype, what="", ref_tol=REF64, mlx_floor=MLX_FLOOR):
    """out: our result; mlx_out: MLX's op; ref64: float64 NumPy reference.

    ref_tol and mlx_floor: the tolerance tables of the op (REF64/MLX_FLOOR for
    quantized_matmul, ATTN_REF64/ATTN_MLX_FLOOR for attention)."""
    assert out.dtype == mlx_out.dtype, f"{what}: dtype {out.dtype} != MLX's {mlx_out.dtype}"
    assert out.shape == mlx_out.shape, f"{what}: shape {out.shape} != MLX's {mlx_out.shape}"
    o, m = to_np64(out), to_np64(mlx_out)
    assert np.all(np.isfinite(o)), f"{what}: non-finite values in the output"
    e_ref = rel_err(o, ref64)
    assert e_ref <= ref_tol[dtype], f"{what}: error vs float64 {e_ref:.3g} > {ref_tol[dtype]:.3g}"
    e_mlx_ref = rel_err(m, ref64)
    bound = max(mlx_floor[dtype], MLX_SLACK * e_mlx_ref)
    e_mlx = rel_err(o, m)
    assert e_mlx <= bound, (
        f"{what}: differs from MLX by {e_mlx:.3g} > {bound:.3g} "
        f"(MLX vs float64: {e_mlx_ref:.3g})"
    )

# Models (tests/test_models.py): logits of a tiny quantized mlx-lm model,
# patched (our quantized_matmul, optionally flash_attention) against the same
# model unpatched, every prefill and decode step. Both sides accumulate in
# float32, but MLX's CPU path rounds partial sums to float16 / bfloat16.
# Measured worst over prefill + 4 decode steps, batch 3, 2 layers, qwen3 and
# llama, group 32/64/128, 4/8 bits, with and without attention=True:
# float32 1.4e-6, float16 5.9e-3, bfloat16 5.1e-2 (MLX's own rounding).
MODEL_LOGITS = {mx.float32: 1e-5, mx.float16: 1.5e-2, mx.bfloat16: 1e-1}
