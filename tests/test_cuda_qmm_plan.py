"""The CUDA launch plan of quantized_matmul (csrc/cuda/qmm_plan.cpp): plain C++,
checked here on any machine. The GPU itself runs in the parity suite
(`--device gpu` on a CUDA build of MLX)."""

import math

import pytest

from knob_env import output_under
from qmm_cases import SIMT_MAX_KB, simt_takes
from mlx_kernels import _ext
from test_quantized_matmul import BULK_CASES, BULK_PLANS

BULK_WARPS = (16, 8)  # warps of a bulk-kernel block, the first that fits
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
        if p["kernel"] == "tensor_core_kslice":
            check_kslice_plan(p, M, N, K, bits, rounds=kslice_rounds(M, N, K, 64, bits))
            continue
        if simt_takes(M, N, K, bits):
            check_simt_small_m_plan(p, N)
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


KSLICE_MAX_WARPS = 8  # qmm_plan.h
KSLICE_ROUNDS = 1  # qmm_plan.cpp: rounds of loads a k-slice warp may take


def kslice_batch(M):
    """k-steps a k-slice warp loads at once (qmm_plan.h): 4 with one 8-row tile
    of x, 2 with two."""
    return 4 if M <= 8 else 2


def kslice_covers(M, K, bits, rounds=KSLICE_ROUNDS):
    """Whether the k-slice kernel takes K at this M (qmm_plan.cpp): M <= 16 and
    K at most `rounds` batches of kslice_batch(M) k-steps for each of
    KSLICE_MAX_WARPS warps."""
    steps = math.ceil(K / (4 * 128 // bits))
    return M <= 16 and steps <= rounds * kslice_batch(M) * KSLICE_MAX_WARPS


def check_simt_small_m_plan(p, N):
    """simt_qmv: one warp a weight row, 8 a block, one block row."""
    assert (p["kernel"], list(p["grid"]), p["block"]) == ("simt_small_m", [math.ceil(N / 8), 1, 1], 256)


def expected_non_bulk(M, N, K, bits, dtype="float16", simt_max_kb=SIMT_MAX_KB):
    """The kernel of a transpose=true plan the bulk kernel did not take
    (qmm_plan.cpp, default knobs): simt_qmv at M = 1 on at most simt_max_kb
    of weights, the k-slice kernel where it covers K in one round of loads a
    warp, else tc_qmm."""
    if simt_takes(M, N, K, bits, dtype, simt_max_kb):
        return "simt_small_m"
    return "tensor_core_kslice" if kslice_covers(M, K, bits) else "tensor_core"


KSLICE_OVER_BULK_KB_PER_SM = 124  # qmm_plan.cpp (16 MB on 132 SMs)
KSLICE_OVER_BULK_ROUNDS = 4


def bulk_takes(M, N, K, gs, bits, sms=132):
    """Whether the bulk kernel can take the problem (qmm_plan.cpp, defaults):
    M <= 16, whole stages of 8 groups (at least 256 bytes a row), 30 KB of
    weights an SM, and a k split whose blocks of 8 warps fit the ring floor in
    227 KB of shared memory."""
    stage_k = max(256, gs * bits) * 8 // bits
    if not (M <= 16 and K % stage_k == 0 and N * K * bits // 8 >= 30 * 1024 * sms):
        return False
    for split in (1, 2, 4, 8):
        if split <= K // stage_k:
            fixed, slot, busiest = bulk_fixed_smem(M, K, gs, bits, split, math.ceil(N / 16), sms, 8)
            if fixed + 8 * min(ring_floor(M), busiest) * slot <= 227 * 1024:
                return True
    return False


def over_bulk(M, N, K, bits, sms=132):
    """Mid-sized weights (at most KSLICE_OVER_BULK_KB_PER_SM KB of packed w an
    SM) that the k-slice kernel takes from the bulk kernel, with up to
    KSLICE_OVER_BULK_ROUNDS rounds of loads a warp."""
    return (N * K * bits // 8 <= KSLICE_OVER_BULK_KB_PER_SM * 1024 * sms
            and kslice_covers(M, K, bits, KSLICE_OVER_BULK_ROUNDS))


def kslice_rounds(M, N, K, gs, bits, sms=132):
    """Rounds of loads a k-slice warp may take in this plan: 4 on weights it
    takes from the bulk kernel, else 1."""
    if bulk_takes(M, N, K, gs, bits, sms) and over_bulk(M, N, K, bits, sms):
        return KSLICE_OVER_BULK_ROUNDS
    return KSLICE_ROUNDS


def kslice_warps(M, N, steps, sms=132, rounds=KSLICE_ROUNDS):
    """Warps of a k-slice block (qmm_plan.cpp): two k-steps a warp, at most 4
    warps when the row tiles outnumber the SMs, but enough that `rounds`
    batches a warp cover K."""
    w = min(KSLICE_MAX_WARPS, math.ceil(steps / 2))
    if math.ceil(N / 16) > sms:
        w = min(w, 4)
    return max(w, math.ceil(steps / (rounds * kslice_batch(M))))


def check_kslice_plan(p, M, N, K, bits, sms=132, rounds=KSLICE_ROUNDS):
    """One block per 16-row tile; its warps cover every k-step once, each at
    most `rounds` batches of them (rounds of loads); no cluster."""
    assert p["kernel"] == "tensor_core_kslice" and kslice_covers(M, K, bits, rounds), (M, N, K, p)
    assert p["grid"] == (math.ceil(N / 16), 1, 1)
    assert p["split_k"] == 1 and p["row_tiles"] == 1
    assert p["m_tiles"] == (1 if M <= 8 else 2)  # every row of x
    assert p["k_step"] == 4 * 128 // bits
    assert p["num_steps"] == math.ceil(K / p["k_step"])
    w = p["warps"]
    assert 1 <= w <= KSLICE_MAX_WARPS and p["block"] == 32 * w
    assert w == kslice_warps(M, N, p["num_steps"], sms, rounds)
    assert w <= p["num_steps"]  # no warp without a k-step
    assert p["steps_per_split"] == math.ceil(p["num_steps"] / w)
    assert p["steps_per_split"] <= rounds * kslice_batch(M)


def bulk_fixed_smem(M, K, gs, bits, split, tiles, sms, warps):
    """Shared memory of a bulk block apart from its rings (mirrors qmm_plan.cpp),
    the stage-buffer bytes of one slot, and the stages of the busiest warp."""
    row_bytes = max(256, gs * bits)
    k_step = row_bytes * 8 // bits
    stages = K // k_step
    spp = math.ceil(stages / split)
    split = math.ceil(stages / spp)
    mt = 1 if M <= 8 else 2
    tpb = math.ceil(tiles / max(1, sms // split))
    a128 = lambda n: (n + 127) // 128 * 128
    x_pitch = spp * k_step * 2 + (64 if bits == 4 else 16)
    off = a128(16 * 4 * 8 + 8 * mt * x_pitch)
    off = a128(off + 2 * 8 * mt * spp * (k_step // gs) * 2)
    off = a128(off + (tpb * mt * 4 * 32 * 4 if split > 1 else 0))
    return off, 16 * (row_bytes + 2 * (k_step // gs) * 2), math.ceil(tpb / warps) * spp


def check_bulk_plan(p, M, N, K, gs, bits, sms=132):
    """The bulk-copy plan covers every output column, row of x and k value once,
    in one wave of persistent blocks whose shared memory fits."""
    assert M <= 16 and p["m_tiles"] == (1 if M <= 8 else 2)
    row_bytes = max(256, gs * bits)  # 8 groups a stage, at least 256 bytes
    assert p["row_bytes"] == row_bytes and p["k_step"] == row_bytes * 8 // bits
    assert K % p["k_step"] == 0 and p["num_steps"] == K // p["k_step"]
    split, spp, stages = p["split_k"], p["steps_per_split"], p["num_steps"]
    # the cluster's k parts cover every stage once, none empty
    assert 1 <= split <= 8 and (split - 1) * spp < stages <= split * spp
    gx, gy, gz = p["grid"]
    warps = p["warps"]
    assert (gx, gz) == (split, 1) and p["block"] == 32 * warps and warps in BULK_WARPS
    tiles, tpb = math.ceil(N / 16), p["tiles_per_block"]
    assert (gy - 1) * tpb < tiles <= gy * tpb  # every 16-row tile once
    assert gy <= max(1, sms // split)  # one wave of clusters
    # shared memory: barriers, staged x, X hi/lo, partial sums, rings; in order,
    # 128-byte aligned, within the 227 KB a block may have
    x, xsum, part, ring_off, total = p["smem"]
    mt = p["m_tiles"]
    assert p["x_pitch"] == spp * p["k_step"] * 2 + (64 if bits == 4 else 16)
    assert p["x_pitch"] % 128 == (64 if bits == 4 else 16)  # conflict-free fragment reads
    assert x >= 16 * 4 * 8 and xsum >= x + 8 * mt * p["x_pitch"]
    assert part >= xsum + 2 * 8 * mt * spp * (p["k_step"] // gs) * 2
    assert ring_off >= part + (tpb * mt * 512 if split > 1 else 0)
    assert all(v % 128 == 0 for v in (x, xsum, part, ring_off))
    slot = 16 * (row_bytes + 2 * (p["k_step"] // gs) * 2)
    assert 1 <= p["ring"] <= 4 and total == ring_off + warps * p["ring"] * slot <= 227 * 1024
    busiest = math.ceil(tpb / warps) * spp  # stages of the busiest warp
    assert p["ring"] >= min(ring_floor(M), busiest)
    assert p["smem_bytes"] == total


def ring_floor(M):
    """The fewest stage buffers a warp the plan accepts (qmm_plan.cpp)."""
    return 2 if M <= 8 else 1


@pytest.mark.parametrize("bits,gs", [(4, 32), (4, 64), (4, 128), (8, 32), (8, 64), (8, 128)])
@pytest.mark.parametrize("sms", [1, 8, 132])
def test_bulk_plan_shapes(bits, gs, sms):
    stage_k = max(256, gs * bits) * 8 // bits
    for N in (16, 40, 1000, 4096, 14336, 128256):
        for K in (stage_k, 3 * stage_k, 4096, 14336):
            for M in (1, 4, 5, 8, 9, 16, 17):
                p = _ext.plan_cuda_quantized_matmul(M, N, K, gs, bits, True, "float16", sms)
                if simt_takes(M, N, K, bits):  # before the bulk kernel, whatever the SMs
                    check_simt_small_m_plan(p, N)
                    continue
                if bulk_takes(M, N, K, gs, bits, sms):
                    if over_bulk(M, N, K, bits, sms):  # mid-sized: the k-slice kernel
                        check_kslice_plan(p, M, N, K, bits, sms, KSLICE_OVER_BULK_ROUNDS)
                    else:
                        assert p["kernel"] == "tensor_core_bulk", (M, N, K)
                        check_bulk_plan(p, M, N, K, gs, bits, sms)
                    continue
                assert p["kernel"] == expected_non_bulk(M, N, K, bits), (M, N, K)
                if p["kernel"] == "tensor_core_kslice":
                    check_kslice_plan(p, M, N, K, bits, sms)


def test_long_k_forced_plans():
    """The kernels test_quantized_matmul.py's long-K cases run on the GPU under
    its forced plans (simt_qmv off): with the k-slice kernel kept off
    (threshold 0), the bulk kernel wherever it can take the problem on that
    many SMs; with it taking everything (1 << 20 KB an SM), the k-slice
    kernel."""
    try:
        _ext.set_cuda_quantized_matmul_simt_max_kb(0)
        for sms, kslice_kb in BULK_PLANS[1:]:
            _ext.set_cuda_quantized_matmul_kslice_over_bulk_kb_per_sm(kslice_kb)
            for N, K, gs, bits in BULK_CASES:
                for M in (1, 2, 3, 4, 5, 8, 9, 16):
                    p = _ext.plan_cuda_quantized_matmul(M, N, K, gs, bits, True, "float16", sms)
                    if kslice_kb:
                        assert p["kernel"] == "tensor_core_kslice", (N, K, M, sms)
                    elif bulk_takes(M, N, K, gs, bits, sms):
                        check_bulk_plan(p, M, N, K, gs, bits, sms)
                    else:  # 72x2048 (74 KB) on four SMs
                        want = expected_non_bulk(M, N, K, bits, simt_max_kb=0)
                        assert p["kernel"] == want, (N, K, M, sms)
    finally:
        _ext.set_cuda_quantized_matmul_kslice_over_bulk_kb_per_sm(-1)
        _ext.set_cuda_quantized_matmul_simt_max_kb(-1)


def test_bulk_plan_fills_the_gpu():
    """Llama-3-8B shapes of more than 16 MB at M = 1 and 16 on 132 SMs: the bulk
    kernel, with the work of an SM (row tiles a block x stages a k part) within 12%
    of an even share, and at least the ring floor (two stage buffers a warp at
    M <= 8, one above)."""
    for N, K in [(14336, 4096), (4096, 14336), (128256, 4096), (151936, 1024)]:
        for M in (1, 16):
            p = _ext.plan_cuda_quantized_matmul(M, N, K, 64, 4, True, "float16", 132)
            assert p["kernel"] == "tensor_core_bulk", (N, K)
            even = math.ceil(N / 16) * p["num_steps"] / 132
            assert p["tiles_per_block"] * p["steps_per_split"] <= 1.12 * even + 1, (N, K, p)
            busiest = math.ceil(p["tiles_per_block"] / p["warps"]) * p["steps_per_split"]
            assert p["ring"] >= min(ring_floor(M), busiest), (N, K, M, p)


def plan_under(knobs, expr):
    """`expr` (with _ext in scope) evaluated in a fresh process whose
    environment has `knobs` (None: unset): the plan reads its knobs once a
    process. Returns what it prints."""
    return output_under(knobs, f"from mlx_kernels import _ext; print({expr})")


def test_bulk_kernel_can_be_turned_off():
    expr = "_ext.plan_cuda_quantized_matmul(1, 14336, 4096, 64, 4, True, 'float16')['kernel']"
    knobs = {"MLX_KERNELS_QMM_BULK": "0", "MLX_KERNELS_QMM_KSLICE": None}
    assert plan_under(knobs, expr) == "tensor_core_kslice"  # K = 4096: 32 k-steps
    assert plan_under(dict(knobs, MLX_KERNELS_QMM_KSLICE="0"), expr) == "tensor_core"
    assert plan_under({"MLX_KERNELS_QMM_BULK": None}, expr) == "tensor_core_bulk"


@pytest.mark.parametrize("bits", [4, 8])
def test_kslice_plan_where_weights_are_small(bits):
    """The Qwen3-0.6B shapes and 1024x4096 at M <= 16: the k-slice kernel (small
    weights, at most 32 k-steps, 16 at M > 8); past that, or past M = 16, tc_qmm."""
    for N, K in [(1024, 1024), (2048, 1024), (1024, 2048), (3072, 1024), (1024, 3072),
                 (1024, 4096), (16, 64), (40, 8192), (1000, 4000)]:
        for M in (1, 2, 3, 4, 6, 8, 9, 12, 16, 17):
            for dtype in ("float16", "bfloat16"):
                p = _ext.plan_cuda_quantized_matmul(M, N, K, 64, bits, True, dtype, 132)
                rounds = kslice_rounds(M, N, K, 64, bits)  # 8-bit 1024x4096 (4 MB): 4
                if rounds == KSLICE_OVER_BULK_ROUNDS:  # weights the bulk kernel would take
                    check_kslice_plan(p, M, N, K, bits, rounds=rounds)
                    continue
                if p["kernel"] == "tensor_core_bulk":
                    check_bulk_plan(p, M, N, K, 64, bits)
                    continue
                assert p["kernel"] == expected_non_bulk(M, N, K, bits, dtype), (N, K, M, p["kernel"])
                if p["kernel"] == "simt_small_m":
                    check_simt_small_m_plan(p, N)
                if p["kernel"] == "tensor_core_kslice":
                    check_kslice_plan(p, M, N, K, bits)
    # the warps knob (A/B runs): at most that many warps, each with more
    # k-steps; K past 2 warps x 4 k-steps then goes to tc_qmm
    expr = ("[(lambda p: (p['kernel'], p['warps']))("
            "_ext.plan_cuda_quantized_matmul(1, 1024, K, 64, 4, True, 'float16')) "
            "for K in (1024, 2048, 4096)]")
    ks, tc = "tensor_core_kslice", "tensor_core"
    off = {"MLX_KERNELS_QMM_KSLICE_WARPS": None, "MLX_KERNELS_QMM_KSLICE_ROUNDS": None,
           "MLX_KERNELS_QMM_SIMT_MAX_KB": "0"}  # M = 1 on 1024x1024: simt_qmv otherwise
    assert eval(plan_under(off, expr)) == [(ks, 4), (ks, 8), (ks, 8)]
    assert eval(plan_under(dict(off, MLX_KERNELS_QMM_KSLICE_WARPS="2"), expr)) == [
        (ks, 2), (tc, 4), (tc, 4)]
    # the rounds knob: two rounds of loads a warp take K up to 8 x 2 x 2
    # k-steps at M = 9 (K = 4096 at 4-bit: 32 k-steps), one leaves it to tc_qmm
    expr9 = expr.replace("(1, 1024, K", "(9, 1024, K")
    assert eval(plan_under(off, expr9)) == [(ks, 4), (ks, 8), (tc, 4)]
    assert eval(plan_under(dict(off, MLX_KERNELS_QMM_KSLICE_ROUNDS="2"), expr9)) == [
        (ks, 4), (ks, 8), (ks, 8)]


def test_kslice_over_bulk():
    """Weights the bulk kernel would take, up to 124 KB of packed w an SM (16 MB
    on 132 SMs), go to the k-slice kernel with up to 4 rounds of loads a warp
    (4096x4096: 256 row tiles, so 4 warps of 8 k-steps); larger weights stay
    with the bulk kernel. MLX_KERNELS_QMM_KSLICE_OVER_BULK_KB_PER_SM=0 and the
    tests' setter turn it off (the setter's -1 back on)."""
    shapes = ((1, 4096), (16, 4096), (1, 6144), (1, 10240), (1, 14336))
    expr = ("[(lambda p: (p['kernel'], p['warps'], p['steps_per_split'], p['m_tiles']))("
            "_ext.plan_cuda_quantized_matmul(M, N, 4096, 64, 4, True, 'float16', 132)) "
            f"for M, N in {shapes}]")
    knob = "MLX_KERNELS_QMM_KSLICE_OVER_BULK_KB_PER_SM"
    ks, bulk = "tensor_core_kslice", "tensor_core_bulk"
    on = eval(plan_under({knob: None}, expr))
    assert on[:2] == [(ks, 4, 8, 1), (ks, 4, 8, 2)]
    assert on[2][0] == ks  # 6144x4096: 12.6 MB
    assert [k for k, *_ in on[3:]] == [bulk, bulk]  # 21 and 29 MB
    assert [k for k, *_ in eval(plan_under({knob: "0"}, expr))] == [bulk] * 5
    # with up to 8 warps where the row tiles outnumber the SMs: one round each
    wide = eval(plan_under({knob: None, "MLX_KERNELS_QMM_KSLICE_WIDE_WARPS": "8"}, expr))
    assert wide[:2] == [(ks, 8, 4, 1), (ks, 8, 4, 2)]
    # the threshold scales with the SMs planned for: 4096x4096 is 62 KB an SM
    # on 132 SMs, 128 on 64
    assert _ext.plan_cuda_quantized_matmul(1, 4096, 4096, 64, 4, True, "float16", 64)[
        "kernel"] == bulk
    try:
        _ext.set_cuda_quantized_matmul_kslice_over_bulk_kb_per_sm(0)
        assert _ext.plan_cuda_quantized_matmul(1, 4096, 4096, 64, 4, True, "float16")[
            "kernel"] == bulk
        _ext.set_cuda_quantized_matmul_kslice_over_bulk_kb_per_sm(1 << 20)
        assert _ext.plan_cuda_quantized_matmul(1, 14336, 4096, 64, 4, True, "float16")[
            "kernel"] == ks
    finally:
        _ext.set_cuda_quantized_matmul_kslice_over_bulk_kb_per_sm(-1)
    assert _ext.plan_cuda_quantized_matmul(1, 14336, 4096, 64, 4, True, "float16")[
        "kernel"] == bulk


def test_bulk_split_knob():
    """MLX_KERNELS_QMM_BULK_SPLIT (A/B runs only) forces the bulk plan's k split
    where it fits; 14336x4096 takes 4 k parts on 132 SMs by default."""
    expr = ("(lambda p: (p['kernel'], p['split_k']))("
            "_ext.plan_cuda_quantized_matmul(1, 14336, 4096, 64, 4, True, 'float16', 132))")
    knob = "MLX_KERNELS_QMM_BULK_SPLIT"
    assert eval(plan_under({knob: None}, expr)) == ("tensor_core_bulk", 4)
    assert eval(plan_under({knob: "1"}, expr)) == ("tensor_core_bulk", 1)
    assert eval(plan_under({knob: "2"}, expr)) == ("tensor_core_bulk", 2)


def test_bulk_push_knob():
    """MLX_KERNELS_QMM_BULK_PUSH=1 (a candidate, off by default) marks the bulk
    plans with a split K as pushing their partial sums, with a partials region
    of ceil(tiles_per_block / split) * split tiles (11008x4096: 21 tiles a
    block over 4 ranks, room for 24); the split, grid, block and ring stay;
    plans without a split and other kernels' plans are untouched."""
    expr = ("[(lambda p: (p['kernel'], p['push_partials'], p['split_k'], p['grid'], p['block'], "
            "p['ring'], p['tiles_per_block'], p['m_tiles'], p['smem']))("
            "_ext.plan_cuda_quantized_matmul(M, N, K, 64, 4, True, dt, 132)) "
            "for M, N, K, dt in ((1, 14336, 4096, 'float16'), (8, 4096, 14336, 'bfloat16'), "
            "(16, 11008, 4096, 'float16'), (16, 128256, 4096, 'float16'), "
            "(1, 151936, 1024, 'bfloat16'), (1, 1024, 1024, 'float16'), "
            "(64, 4096, 4096, 'float16'))]")
    knob = "MLX_KERNELS_QMM_BULK_PUSH"
    off = eval(plan_under({knob: None}, expr))
    on = eval(plan_under({knob: "1"}, expr))
    assert [p[0] for p in off] == ["tensor_core_bulk"] * 5 + ["simt_small_m", "tensor_core"]
    assert [p[2] > 1 for p in off[:5]] == [True] * 3 + [False] * 2  # bulk k splits
    assert [p[1] for p in off] == [False] * 7
    assert [p[1] for p in on] == [True] * 3 + [False] * 4
    for a, b in zip(off[:3], on[:3]):
        assert b[2:8] == a[2:8]  # split, grid, block, ring, tiles a block, m tiles
        split, tpb, m_tiles = a[2], a[6], a[7]
        region = lambda p: p[8][3] - p[8][2]  # noqa: E731  (ring offset - partials offset)
        assert region(a) == tpb * m_tiles * 512
        assert region(b) == -(-tpb // split) * split * m_tiles * 512
        assert b[8][4] - a[8][4] == region(b) - region(a) and b[8][4] <= 227 * 1024
    assert region(on[2]) > region(off[2])  # 21 tiles over 4 ranks: 24 tiles' room
    assert on[3:] == off[3:]
    assert [p[1] for p in eval(plan_under({knob: "0"}, expr))] == [False] * 7


def test_tc_mma_order_by_tiles():
    """tc_qmm's mma order where each was measured faster, at one row tile:
    interleaved (1) at 2 or 8 tiles of x (M 9-16, M > 32), interleaved with a
    one-tile tail (2) at 4 tiles (M 17-32), chained (0) at 1 tile (untimed);
    other kernels' plans are unmarked (0). MLX_KERNELS_QMM_TC_INTERLEAVE (A/B
    runs only) puts every variant in one order: 0, 1 or 2."""
    expr = ("[(lambda p: (p['kernel'], p['m_tiles'], p['row_tiles'], p['mma_order']))("
            "_ext.plan_cuda_quantized_matmul(M, N, K, 64, 4, True, 'float16', 132)) "
            "for M, N, K in ((1, 151936, 1024), (64, 151936, 1024), (24, 4096, 4096), "
            "(32, 1024, 1024), (12, 1024, 4096), (16, 1024, 3072), (40, 4096, 4096))]")
    knob = "MLX_KERNELS_QMM_TC_INTERLEAVE"
    default = eval(plan_under({knob: None}, expr))
    assert default == [
        ("tensor_core_bulk", 1, 1, 0),
        ("tensor_core", 8, 1, 1),
        ("tensor_core", 4, 1, 2),
        ("tensor_core", 4, 1, 2),
        ("tensor_core", 2, 1, 1),
        ("tensor_core", 2, 1, 1),
        ("tensor_core", 8, 1, 1),
    ]
    assert [p[3] for p in eval(plan_under({knob: "1"}, expr))] == [0, 1, 1, 1, 1, 1, 1]
    assert [p[3] for p in eval(plan_under({knob: "0"}, expr))] == [0] * 7
    # 2: interleaved with the ragged last pass as one tile, every variant.
    assert [p[3] for p in eval(plan_under({knob: "2"}, expr))] == [0, 2, 2, 2, 2, 2, 2]


def test_ring_floor_by_m():
    """Two stage buffers a warp at M <= 8, one at M 9-16: there 16 warps fit
    next to twice the staged x (128256x4096 at M = 16, one k part; 8 warps of
    two buffers were 15% slower on the H200, session 8).
    MLX_KERNELS_QMM_MIN_RING forces one floor for every M."""
    expr = ("[(lambda p: (p['warps'], p['ring']))("
            "_ext.plan_cuda_quantized_matmul(M, N, 4096, 64, 4, True, 'float16')) "
            "for M, N in ((1, 14336), (8, 128256), (16, 128256))]")
    knobs = {"MLX_KERNELS_QMM_MIN_RING": None}
    default = eval(plan_under(knobs, expr))
    assert default[1][1] >= 2  # M = 8: at least two buffers
    assert default[2] == (16, 1)  # M = 16: 16 warps, one stage buffer each
    two = eval(plan_under(dict(knobs, MLX_KERNELS_QMM_MIN_RING="2"), expr))
    assert two[2][0] == 8 and two[2][1] >= 2  # forced floor 2: only 8 warps fit
    assert two[:2] == default[:2]
    one = eval(plan_under(dict(knobs, MLX_KERNELS_QMM_MIN_RING="1"), expr))
    assert one[2] == (16, 1)


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


# Clusters of 1..8 bulk blocks an H100 ran at once in session 13, as its plans
# show them (grids 2 x 64 and 4 x 29); the other counts are made up, below
# 132 / s as a GPC of 16 or 18 SMs makes them.
H100_CLUSTERS = [132, 64, 40, 29, 24, 20, 16, 14]


def test_plan_with_the_devices_cluster_capacity():
    """The plan with the driver's cluster capacities reproduces the H100's
    launches: 14336x4096 on two k parts (64 clusters of 2, 14 tiles a block),
    4096x14336 on four (29 clusters of 4, 9 tiles); with num_sms / s (33
    clusters of 4) 14336x4096 takes four."""
    p = _ext.plan_cuda_quantized_matmul(1, 14336, 4096, 64, 4, True, "float16", 132,
                                        H100_CLUSTERS)
    assert (p["split_k"], p["grid"], p["tiles_per_block"]) == (2, (2, 64, 1), 14)
    check_bulk_plan(p, 1, 14336, 4096, 64, 4)
    p = _ext.plan_cuda_quantized_matmul(1, 4096, 14336, 64, 4, True, "float16", 132,
                                        H100_CLUSTERS)
    assert (p["split_k"], p["grid"], p["tiles_per_block"]) == (4, (4, 29, 1), 9)
    check_bulk_plan(p, 1, 4096, 14336, 64, 4)
    assert _ext.plan_cuda_quantized_matmul(1, 14336, 4096, 64, 4, True, "float16")["split_k"] == 4
    for bad, msg in (([132, 64], "cluster_capacity must list 8 counts"),
                     ([132, 0] + [1] * 6, "cluster_capacity counts must be >= 1")):
        with pytest.raises(ValueError, match=msg):
            _ext.plan_cuda_quantized_matmul(1, 4096, 4096, 64, 4, True, "float16", 132, bad)


def test_device_cluster_capacity():
    """On a CUDA build the driver's counts (what the plan uses on this GPU and
    the benchmarks record): 8 of them, none above SMs / s; elsewhere a clear
    NotImplementedError."""
    import mlx.core as mx

    if mx.cuda.is_available():
        caps = _ext.cuda_bulk_cluster_capacity()
        sms = caps[0]
        assert len(caps) == 8 and sms >= 1
        assert all(1 <= c <= sms // s for s, c in enumerate(caps, start=1)), caps
    else:
        with pytest.raises(NotImplementedError, match="no CUDA backend"):
            _ext.cuda_bulk_cluster_capacity()


def test_simt_small_m_plan():
    """simt_qmv takes float16/bfloat16 x at M = 1 on at most 1 MB of packed
    weights (H100, session 22: 0.90-1.00x the k-slice kernel's time there,
    1.05-1.59x at M = 2 or above 1 MB), one warp a weight row, 8 a block;
    everything else keeps its plan. MLX_KERNELS_QMM_SIMT_MAX_KB (0: never)
    and MLX_KERNELS_QMM_SIMT_MAX_M (1 or 2) move the bounds (A/B runs, read
    once a process); set_cuda_quantized_matmul_simt_max_kb (tests) too."""
    cases = [(1, 1024, 1024, "float16", 4), (1, 2048, 1024, "bfloat16", 4),
             (1, 1024, 1024, "float16", 8), (1, 3072, 1024, "float16", 4),
             (2, 1024, 1024, "float16", 4), (1, 2048, 2048, "bfloat16", 4),
             (3, 1024, 1024, "float16", 4), (1, 4096, 4096, "float16", 4),
             (1, 1000, 1024, "float32", 4)]
    expr = ("[(lambda p: (p['kernel'], p['grid'], p['block']))("
            "_ext.plan_cuda_quantized_matmul(M, N, K, 64, bits, True, dt)) "
            f"for M, N, K, dt, bits in {cases}]")
    knobs = ("MLX_KERNELS_QMM_SIMT_MAX_KB", "MLX_KERNELS_QMM_SIMT_MAX_M")
    off = eval(plan_under({knobs[0]: "0", knobs[1]: None}, expr))  # noqa: S307
    assert "simt_small_m" not in [g[0] for g in off]
    for kb, rows in ((None, None), ("0", None), ("2048", None), ("2048", "2"), (None, "5")):
        got = eval(plan_under({knobs[0]: kb, knobs[1]: rows}, expr))  # noqa: S307
        max_kb = 1024 if kb is None else int(kb)
        max_m = 1 if rows is None else min(int(rows), 2)
        for (M, N, K, dt, bits), (kernel, grid, block), o in zip(cases, got, off):
            if M <= max_m and simt_takes(1, N, K, bits, dt, max_kb):
                check_simt_small_m_plan(dict(kernel=kernel, grid=grid, block=block), N)
            else:
                assert kernel == o[0], (kb, rows, M, N, K, dt)
        if kb is None and rows is None:  # the defaults
            assert [g[0] for g in got][:3] == ["simt_small_m"] * 3
            assert "simt_small_m" not in [g[0] for g in got][3:]
    # the tests' setter: 0 gives M = 1 on 1024x1024 back to the k-slice kernel
    try:
        _ext.set_cuda_quantized_matmul_simt_max_kb(0)
        assert _ext.plan_cuda_quantized_matmul(1, 1024, 1024, 64, 4, True, "float16")[
            "kernel"] == "tensor_core_kslice"
        _ext.set_cuda_quantized_matmul_simt_max_kb(4096)
        assert _ext.plan_cuda_quantized_matmul(1, 2048, 2048, 64, 4, True, "float16")[
            "kernel"] == "simt_small_m"
    finally:
        _ext.set_cuda_quantized_matmul_simt_max_kb(-1)
    assert _ext.plan_cuda_quantized_matmul(1, 1024, 1024, 64, 4, True, "float16")[
        "kernel"] == "simt_small_m"
