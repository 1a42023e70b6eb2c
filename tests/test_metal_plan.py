"""The Metal launch plan of quantized_matmul (plain C++, tested on Linux), and
the shuffled-schedule mode of the simulator over every kernel variant."""

import itertools

import mlx.core as mx
import numpy as np
import pytest

import mlx_kernels as mk
from qmm_cases import make_weights, make_x, reference64
from tolerances import REF64, rel_err, to_np64

plan = mk._ext.plan_metal_quantized_matmul
DTYPES = ["float32", "float16", "bfloat16"]


@pytest.mark.parametrize("transpose", [True, False])
def test_kernel_for_every_m(transpose):
    """M = 1..8: the mat-vec kernels (weights read once for all rows), their
    row capacity the next power of two; M > 8: the tiled kernel."""
    for M in range(1, 129):
        p = plan(M, 4096, 4096, 64, 4, transpose, "float16")
        if M <= 8:
            assert p["kernel"] == ("qmv" if transpose else "qvm"), M
            assert p["rows"] >= M and p["rows"] < 2 * M and p["rows"] in (1, 2, 4, 8), M
            assert p["name"].endswith(f"_r{p['rows']}")
        else:
            assert p["kernel"] == "qmm", M
            assert p["name"].endswith("_t" if transpose else "_n")


@pytest.mark.parametrize("transpose", [True, False])
def test_grid_covers_output(transpose):
    for M, N in itertools.product([1, 3, 8, 9, 33, 128], [32, 96, 1000 if transpose else 1024, 4096]):
        p = plan(M, N, 256, 32, 4, transpose, "float32")
        gx, gy, gz = p["grid"]
        tx, ty, tz = p["threadgroup"]
        assert gz == 1 and ty == 1 and tz == 1 and tx % 32 == 0 and tx <= 1024
        if p["kernel"] == "qmv":  # 2 simdgroups x 4 columns per threadgroup
            assert tx == 64 and gx * 8 >= N > (gx - 1) * 8 and gy == 1
        elif p["kernel"] == "qvm":  # one thread per packed word
            words = N // 8
            assert gx * tx >= words > (gx - 1) * tx and gy == 1
        else:  # 32 x 32 tiles
            assert tx == 128 and gx * 32 >= N > (gx - 1) * 32 and gy * 32 >= M > (gy - 1) * 32


def test_every_planned_kernel_exists():
    if not mk.metal_simulator_available():
        pytest.skip("Metal simulator not built: " + mk._ext.metal_simulator_status()[1])
    names = set(mk._ext.metal_simulator_kernels())
    planned = set()
    for dtype, gs, bits, transpose, M in itertools.product(
        DTYPES, [32, 64, 128], [4, 8], [True, False], range(1, 40)
    ):
        planned.add(plan(M, 1024, 1024, gs, bits, transpose, dtype)["name"])
    missing = planned - names
    assert not missing, f"planned kernels missing from the library: {sorted(missing)[:5]}"
    # and no quantized_matmul instantiation is dead weight
    assert {n for n in names if n.startswith(("mlxk_qmv_", "mlxk_qvm_", "mlxk_qmm_"))} == planned


# One configuration of each kernel variant under the shuffled schedule: every
# suspension (barrier, SIMD-group function) resumes threads in a random order.
VARIANTS = [
    pytest.param(1, True, id="qmv-r1"),
    pytest.param(3, True, id="qmv-r4"),
    pytest.param(8, True, id="qmv-r8"),
    pytest.param(2, False, id="qvm-r2"),
    pytest.param(40, True, id="qmm-t"),
    pytest.param(40, False, id="qmm-n"),
]


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("M,transpose", VARIANTS)
def test_shuffled_schedule(M, transpose, seed):
    if not mk.metal_simulator_available():
        pytest.skip("Metal simulator not built: " + mk._ext.metal_simulator_status()[1])
    N, K, gs = (72 if transpose else 128), 256, 64
    w, s, b = make_weights(N, K, gs, 4, mx.float16, transpose)
    x = make_x((M, K), mx.float16)
    with mk.metal_simulator(shuffle=True, seed=seed):
        out = mk.quantized_matmul(x, w, s, b, transpose=transpose, group_size=gs, stream=mx.cpu)
        mx.eval(out)
    ref64 = reference64(x, w, s, b, transpose, gs, 4)
    assert rel_err(to_np64(out), ref64) <= REF64[mx.float16]
    native = mk.quantized_matmul(x, w, s, b, transpose=transpose, group_size=gs, stream=mx.cpu)
    assert rel_err(to_np64(out), to_np64(native)) <= REF64[mx.float16]


def test_simulator_choice_is_made_at_call_time():
    if not mk.metal_simulator_available():
        pytest.skip("Metal simulator not built: " + mk._ext.metal_simulator_status()[1])
    assert mk._ext.get_cpu_backend()[0] is False
    with mk.metal_simulator(shuffle=True, seed=7):
        assert mk._ext.get_cpu_backend() == (True, True, 7)
    assert mk._ext.get_cpu_backend() == (False, False, 0)
