"""The CUDA launch plan of quantized_matmul (csrc/cuda/qmm_plan.cpp): plain C++,
checked here on any machine. The GPU itself runs in the parity suite
(`--device gpu` on a CUDA build of MLX)."""

import math

import pytest

from mlx_kernels import _ext

SHAPES = [(72, 192), (1000, 4096), (1024, 1024), (4096, 4096), (14336, 4096),
          (4096, 14336), (128256, 4096), (151936, 1024)]
M_VALUES = list(range(1, 70)) + [100, 128, 257]


@pytest.mark.parametrize("N,K", SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("bits", [4, 8])
def test_tensor_core_plan_covers_the_problem(N, K, dtype, bits):
    for M in M_VALUES:
        p = _ext.plan_cuda_quantized_matmul(M, N, K, 64, bits, True, dtype)
        assert p["kernel"] == "tensor_core"
        # only variants that exist in the binary (a missing one raised at run time)
        assert p["compiled"], (M, p)
        gx, gy, gz = p["grid"]
        rows_per_block = 16 * p["row_tiles"] * p["warps"]
        assert gy == math.ceil(N / rows_per_block)  # every output column
        assert gz * 8 * p["m_tiles"] >= M > (gz - 1) * 8 * p["m_tiles"]  # every row of x
        # split-K: the cluster (grid.x) covers every k-step exactly once
        assert gx == p["split_k"] and 1 <= gx <= 8
        assert p["num_steps"] == math.ceil(K / p["k_step"])
        assert (gx - 1) * p["steps_per_split"] < p["num_steps"] <= gx * p["steps_per_split"]
        assert gy <= 65535 and gz <= 65535


def test_m_tiles_grow_with_m():
    mts = [_ext.plan_cuda_quantized_matmul(M, 4096, 4096, 64, 4, True, "float16")["m_tiles"]
           for M in (1, 8, 9, 16, 17, 32, 33, 64)]
    assert mts == [1, 1, 2, 2, 4, 4, 8, 8]


@pytest.mark.parametrize("M", [1, 8, 9, 64])
def test_other_kernels(M):
    p = _ext.plan_cuda_quantized_matmul(M, 1000, 4096, 64, 4, True, "float32")
    assert p["kernel"] == "simt" and p["grid"][:2] == (math.ceil(1000 / 8), math.ceil(M / 8))
    p = _ext.plan_cuda_quantized_matmul(M, 1024, 4096, 64, 4, False, "float16")
    assert p["kernel"] == "simt_no_transpose"
    assert p["grid"][:2] == (math.ceil(1024 * 4 / 32 / p["block"]), math.ceil(M / 8))


def test_nothing_to_do():
    assert _ext.plan_cuda_quantized_matmul(0, 1000, 4096, 64, 4, True, "float16")["kernel"] == "none"
