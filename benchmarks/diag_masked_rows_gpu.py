"""What MLX's and our attention give a query row whose keys are all masked, per
dtype and mask kind, on the current default device (a diagnostic for the GPU:
`python3 diag_masked_rows_gpu.py`).

For each case it prints, for the fully masked row, how far the output is from
the mean of v, from zeros, and whether it is NaN, for MLX's
mx.fast.scaled_dot_product_attention and for mlx_kernels.flash_attention, and
the largest difference between the two on the other rows.
"""

import mlx.core as mx
import numpy as np

import mlx_kernels as mk


def describe(row, mean_v):
    if np.isnan(row).any():
        return "NaN"
    d_mean = np.abs(row - mean_v).max()
    d_zero = np.abs(row).max()
    return f"|x - mean v| {d_mean:.3g}  |x| {d_zero:.3g}"


def main():
    mx.random.seed(0)
    B, H, D = 2, 4, 64
    for qL, kL in ((7, 7), (16, 300), (1, 300)):
        for dtype in (mx.float16, mx.bfloat16, mx.float32):
            q = mx.random.normal((B, H, qL, D)).astype(dtype)
            k = mx.random.normal((B, H, kL, D)).astype(dtype)
            v = mx.random.normal((B, H, kL, D)).astype(dtype)
            keep = np.random.default_rng(1).uniform(size=(B, 1, qL, kL)) < 0.6
            keep[1, 0, 0, :] = False  # batch 1, query 0: every key masked
            for kind in ("bool", "additive -inf"):
                if kind == "bool":
                    mask = mx.array(keep)
                else:
                    mask = mx.array(np.where(keep, 0.0, -np.inf).astype(np.float32)).astype(dtype)
                ref = mx.fast.scaled_dot_product_attention(q, k, v, scale=D**-0.5, mask=mask)
                ours = mk.flash_attention(q, k, v, scale=D**-0.5, mask=mask)
                ref = np.array(ref.astype(mx.float32), dtype=np.float64)
                ours = np.array(ours.astype(mx.float32), dtype=np.float64)
                mean_v = np.array(v.astype(mx.float32), dtype=np.float64)[1].mean(axis=1)
                rest = np.ones(ref.shape, bool)
                rest[1, :, 0] = False
                other = np.nanmax(np.abs(ref - ours)[rest])
                print(f"qL {qL:2d} kL {kL:3d} {str(dtype):14s} {kind:13s} | MLX: "
                      f"{describe(ref[1, :, 0], mean_v):34s} | ours: {describe(ours[1, :, 0], mean_v):34s}"
                      f" | other rows max |ours - MLX| {other:.3g}")


if __name__ == "__main__":
    main()
