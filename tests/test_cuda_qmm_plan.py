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
        if p["kernel"] == "tensor_core_bulk":
            check_bulk_plan(p, M, N, K, 64, bits)
            continue
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


def check_bulk_plan(p, M, N, K, gs, bits):
    """The bulk-copy plan covers every output column, row of x and k value once."""
    assert M <= 4 and p["m_tiles"] == 1
    row_bytes = max(256, gs * bits)  # 8 groups a stage, at least 256 bytes
    assert p["row_bytes"] == row_bytes and p["k_step"] == row_bytes * 8 // bits
    assert K % p["k_step"] == 0 and p["num_steps"] == K // p["k_step"]
    kp, split, spp = p["k_parts"], p["split_k"], p["steps_per_split"]
    assert kp in (1, 2, 4) and 1 <= split <= 8
    gx, gy, gz = p["grid"]
    assert (gx, gz) == (split, 1) and p["block"] == 32 * p["warps"] == 128
    assert gy == math.ceil(math.ceil(N / 16) / (4 // kp))  # 16-row tiles, 4 / kp a block
    # k parts of spp stages each cover K; their count is ceil(stages / spp) rounded up
    # to a product kp * split (at most 3 more: those parts are empty)
    parts = kp * split
    assert math.ceil(p["num_steps"] / spp) <= parts <= math.ceil(p["num_steps"] / spp) + 3
    assert 1 <= p["ring"] <= min(4, spp)
    scale_bytes = p["k_step"] // gs * 2
    assert p["smem_bytes"] == 128 + 4 * p["ring"] * 16 * (row_bytes + 2 * scale_bytes)
    assert p["smem_bytes"] <= 227 * 1024
    # the split reductions fit in the stage buffers: 7 accumulator sets of 32 lanes
    assert p["smem_bytes"] - 128 >= 7 * p["m_tiles"] * 4 * 32 * 4


@pytest.mark.parametrize("bits,gs", [(4, 32), (4, 64), (4, 128), (8, 32), (8, 64), (8, 128)])
@pytest.mark.parametrize("sms", [1, 8, 132])
def test_bulk_plan_shapes(bits, gs, sms):
    stage_k = max(256, gs * bits) * 8 // bits
    for N in (16, 40, 1000, 4096, 14336, 128256):
        for K in (stage_k, 3 * stage_k, 4096, 14336):
            for M in (1, 4, 5, 8, 9, 16, 17):
                p = _ext.plan_cuda_quantized_matmul(M, N, K, gs, bits, True, "float16", sms)
                # M <= 4, whole stages, at least 30 KB of weights an SM (defaults)
                if M <= 4 and K % stage_k == 0 and N * K * bits // 8 >= 30 * 1024 * sms:
                    assert p["kernel"] == "tensor_core_bulk", (M, N, K)
                    check_bulk_plan(p, M, N, K, gs, bits)
                else:
                    assert p["kernel"] == "tensor_core", (M, N, K)


def test_bulk_plan_fills_the_gpu():
    """Llama-3-8B shapes at M = 1 on 132 SMs: at least two waves of resident warps, or
    as many k parts as there are stages (the cap)."""
    for N, K in [(4096, 4096), (14336, 4096), (4096, 14336), (128256, 4096), (151936, 1024)]:
        p = _ext.plan_cuda_quantized_matmul(1, N, K, 64, 4, True, "float16", 132)
        assert p["kernel"] == "tensor_core_bulk", (N, K)
        warps = math.ceil(N / 16) * p["k_parts"] * p["split_k"]
        resident = 4 * p["blocks_per_sm"] * 132
        assert warps >= 2 * resident or p["steps_per_split"] == 1, p


def test_bulk_kernel_can_be_turned_off():
    import os
    import subprocess
    import sys

    code = ("from mlx_kernels import _ext; "
            "print(_ext.plan_cuda_quantized_matmul(1, 4096, 4096, 64, 4, True, 'float16')['kernel'])")
    env = dict(os.environ, MLX_KERNELS_QMM_BULK="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "tensor_core"
    env.pop("MLX_KERNELS_QMM_BULK")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "tensor_core_bulk"


def test_m_tiles_grow_with_m():
    # K = 4000 is no whole number of bulk stages: the mma kernel at every M
    mts = [_ext.plan_cuda_quantized_matmul(M, 4096, 4000, 64, 4, True, "float16")["m_tiles"]
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
