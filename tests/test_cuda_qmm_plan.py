"""The CUDA launch plan of quantized_matmul (csrc/cuda/qmm_plan.cpp): plain C++,
checked here on any machine. The GPU itself runs in the parity suite
(`--device gpu` on a CUDA build of MLX)."""

import math

import pytest

from mlx_kernels import _ext

BULK_WARPS = (16, 8)  # warps of a bulk-kernel block, the first that fits
# Clusters of 1..8 bulk blocks an H100 ran at once in session 13, as its plans
# show them (grids 2 x 64 and 4 x 29); the other counts are made up, below
# 132 / s as a GPC of 16 or 18 SMs makes them.
H100_CLUSTERS = [132, 64, 40, 29, 24, 20, 16, 14]
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
            check_kslice_plan(p, M, N, K, bits)
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


def expected_non_bulk(M, K, bits):
    """The kernel of a float16 transpose=true plan the bulk kernel did not take
    (qmm_plan.cpp, default knobs): the k-slice kernel at M <= 16 when K is at
    most KSLICE_ROUNDS batches of kslice_batch(M) k-steps for each of
    KSLICE_MAX_WARPS warps, else tc_qmm."""
    steps = math.ceil(K / (4 * 128 // bits))
    cover = KSLICE_ROUNDS * kslice_batch(M) * KSLICE_MAX_WARPS
    return "tensor_core_kslice" if M <= 16 and steps <= cover else "tensor_core"


def kslice_warps(M, N, steps, sms=132):
    """Warps of a k-slice block (qmm_plan.cpp): two k-steps a warp, at most 4
    warps when the row tiles outnumber the SMs, but enough that KSLICE_ROUNDS
    batches a warp cover K."""
    w = min(KSLICE_MAX_WARPS, math.ceil(steps / 2))
    if math.ceil(N / 16) > sms:
        w = min(w, 4)
    return max(w, math.ceil(steps / (KSLICE_ROUNDS * kslice_batch(M))))


def check_kslice_plan(p, M, N, K, bits):
    """One block per 16-row tile; its warps cover every k-step once, each at
    most KSLICE_ROUNDS batches of them (rounds of loads); no cluster."""
    assert p["kernel"] == expected_non_bulk(M, K, bits) == "tensor_core_kslice", (M, N, K, p)
    assert p["grid"] == (math.ceil(N / 16), 1, 1)
    assert p["split_k"] == 1 and p["row_tiles"] == 1
    assert p["m_tiles"] == (1 if M <= 8 else 2)  # every row of x
    assert p["k_step"] == 4 * 128 // bits
    assert p["num_steps"] == math.ceil(K / p["k_step"])
    w = p["warps"]
    assert 1 <= w <= KSLICE_MAX_WARPS and p["block"] == 32 * w
    assert w == kslice_warps(M, N, p["num_steps"])
    assert w <= p["num_steps"]  # no warp without a k-step
    assert p["steps_per_split"] == math.ceil(p["num_steps"] / w)
    assert p["steps_per_split"] <= KSLICE_ROUNDS * kslice_batch(M)


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


def bulk_ring_warps(p, gs):
    """A bulk plan's bytes of one stage slot and how many warps its rings
    serve (from its shared-memory total: all warps, or the busy ones)."""
    slot = 16 * (p["row_bytes"] + 2 * (p["k_step"] // gs) * 2)
    return slot, (p["smem_bytes"] - p["smem"][3]) // (p["ring"] * slot)


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
    warps, ws = p["warps"], p["warp_split"]
    assert (gx, gz) == (split, 1) and p["block"] == 32 * warps and warps in BULK_WARPS
    # warp split: teams of ws warps, every member with a stage of every k part
    # (the last part is the shortest)
    assert ws >= 1 and warps % ws == 0 and stages - (split - 1) * spp >= ws
    tiles, tpb = math.ceil(N / 16), p["tiles_per_block"]
    assert (gy - 1) * tpb < tiles <= gy * tpb  # every 16-row tile once
    assert gy <= max(1, sms // split)  # one wave of clusters
    # shared memory: barriers, staged x, X hi/lo, partial sums, rings; in order,
    # 128-byte aligned, within the 227 KB a block may have
    x, xsum, part, ring_off, total = p["smem"]
    mt = p["m_tiles"]
    assert p["x_pitch"] == spp * p["k_step"] * 2 + (64 if bits == 4 else 16)
    assert p["x_pitch"] % 128 == (64 if bits == 4 else 16)  # conflict-free fragment reads
    # staged rows of x: 8 a tile of x, or (compact candidate) down to M + 1,
    # the last a row of zeros for the lanes of rows past M
    x_rows = p["x_rows"]
    assert min(M + 1, 8 * mt) <= x_rows <= 8 * mt
    assert x >= 16 * 4 * 8 and xsum >= x + x_rows * p["x_pitch"]
    assert part >= xsum + 2 * x_rows * spp * (p["k_step"] // gs) * 2
    assert ring_off >= part + (ws * tpb * mt * 512 if split > 1 or ws > 1 else 0)
    assert all(v % 128 == 0 for v in (x, xsum, part, ring_off))
    # rings for every warp, or (compact candidate) for the busy ones, first
    busy = min(tpb, warps // ws) * ws
    slot, ring_warps = bulk_ring_warps(p, gs)
    assert slot == 16 * (row_bytes + 2 * (p["k_step"] // gs) * 2)
    assert ring_warps in (warps, busy) and busy <= ring_warps
    assert 1 <= p["ring"] <= 4 and total == ring_off + ring_warps * p["ring"] * slot <= 227 * 1024
    busiest = math.ceil(tpb / (warps // ws)) * math.ceil(spp / ws)  # its stages
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
                # M <= 16, whole stages, at least 30 KB of weights an SM (defaults)
                if M <= 16 and K % stage_k == 0 and N * K * bits // 8 >= 30 * 1024 * sms:
                    if p["kernel"] == "tensor_core_bulk":
                        check_bulk_plan(p, M, N, K, gs, bits, sms)
                        continue
                    # only when no k split leaves room for the ring floor
                    for split in (1, 2, 4, 8):
                        if split <= K // stage_k:
                            fixed, slot, busiest = bulk_fixed_smem(
                                M, K, gs, bits, split, math.ceil(N / 16), sms, 8)
                            floor = min(ring_floor(M), busiest)
                            assert fixed + 8 * floor * slot > 227 * 1024, (M, N, K, split)
                assert p["kernel"] == expected_non_bulk(M, K, bits), (M, N, K)


def test_bulk_plan_fills_the_gpu():
    """Llama-3-8B shapes at M = 1 and 16 on 132 SMs: the bulk kernel, with the work
    of an SM (row tiles a block x stages a k part) within 12% of an even share, and
    at least the ring floor (two stage buffers a warp at M <= 8, one above)."""
    for N, K in [(4096, 4096), (14336, 4096), (4096, 14336), (128256, 4096), (151936, 1024)]:
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
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    for k, v in knobs.items():
        env.pop(k, None) if v is None else env.__setitem__(k, v)
    code = f"from mlx_kernels import _ext; print({expr})"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def test_bulk_kernel_can_be_turned_off():
    expr = "_ext.plan_cuda_quantized_matmul(1, 4096, 4096, 64, 4, True, 'float16')['kernel']"
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
                if p["kernel"] == "tensor_core_bulk":  # 8-bit 1024x4096: 4 MB
                    check_bulk_plan(p, M, N, K, 64, bits)
                    continue
                assert p["kernel"] == expected_non_bulk(M, K, bits), (N, K, M, p["kernel"])
                if p["kernel"] == "tensor_core_kslice":
                    check_kslice_plan(p, M, N, K, bits)
    # the warps knob (A/B runs): at most that many warps, each with more
    # k-steps; K past 2 warps x 4 k-steps then goes to tc_qmm
    expr = ("[(lambda p: (p['kernel'], p['warps']))("
            "_ext.plan_cuda_quantized_matmul(1, 1024, K, 64, 4, True, 'float16')) "
            "for K in (1024, 2048, 4096)]")
    ks, tc = "tensor_core_kslice", "tensor_core"
    off = {"MLX_KERNELS_QMM_KSLICE_WARPS": None, "MLX_KERNELS_QMM_KSLICE_ROUNDS": None}
    assert eval(plan_under(off, expr)) == [(ks, 4), (ks, 8), (ks, 8)]
    assert eval(plan_under(dict(off, MLX_KERNELS_QMM_KSLICE_WARPS="2"), expr)) == [
        (ks, 2), (tc, 4), (tc, 4)]
    # the rounds knob: two rounds of loads a warp take K up to 8 x 2 x 2
    # k-steps at M = 9 (K = 4096 at 4-bit: 32 k-steps), one leaves it to tc_qmm
    expr9 = expr.replace("(1, 1024, K", "(9, 1024, K")
    assert eval(plan_under(off, expr9)) == [(ks, 4), (ks, 8), (tc, 4)]
    assert eval(plan_under(dict(off, MLX_KERNELS_QMM_KSLICE_ROUNDS="2"), expr9)) == [
        (ks, 4), (ks, 8), (ks, 8)]


def test_kslice_over_bulk_candidate():
    """MLX_KERNELS_QMM_KSLICE_OVER_BULK_KB (off by default): weights the bulk
    kernel takes, up to that many KB, go to the k-slice kernel with up to 4
    rounds of loads a warp (4096x4096: 256 row tiles, so 4 warps of 8 k-steps);
    larger weights stay with the bulk kernel."""
    expr = ("[(lambda p: (p['kernel'], p['warps'], p['steps_per_split'], p['m_tiles']))("
            "_ext.plan_cuda_quantized_matmul(M, N, 4096, 64, 4, True, 'float16', 132)) "
            "for M, N in ((1, 4096), (16, 4096), (1, 14336))]")
    knob = "MLX_KERNELS_QMM_KSLICE_OVER_BULK_KB"
    default = eval(plan_under({knob: None}, expr))
    assert [k for k, *_ in default] == ["tensor_core_bulk"] * 3
    on = eval(plan_under({knob: "16384"}, expr))  # 16 MB: 4096x4096 (9.4 MB) only
    assert on[:2] == [("tensor_core_kslice", 4, 8, 1), ("tensor_core_kslice", 4, 8, 2)]
    assert on[2][0] == "tensor_core_bulk"  # 14336x4096: 29 MB
    # with up to 8 warps where the row tiles outnumber the SMs: one round each
    wide = eval(plan_under({knob: "16384", "MLX_KERNELS_QMM_KSLICE_WIDE_WARPS": "8"}, expr))
    assert wide[:2] == [("tensor_core_kslice", 8, 4, 1), ("tensor_core_kslice", 8, 4, 2)]


def test_bulk_split_knob():
    """MLX_KERNELS_QMM_BULK_SPLIT (A/B runs only) forces the bulk plan's k split
    where it fits; 14336x4096 takes 4 k parts on 132 SMs by default."""
    expr = ("(lambda p: (p['kernel'], p['split_k']))("
            "_ext.plan_cuda_quantized_matmul(1, 14336, 4096, 64, 4, True, 'float16', 132))")
    knob = "MLX_KERNELS_QMM_BULK_SPLIT"
    assert eval(plan_under({knob: None}, expr)) == ("tensor_core_bulk", 4)
    assert eval(plan_under({knob: "1"}, expr)) == ("tensor_core_bulk", 1)
    assert eval(plan_under({knob: "2"}, expr)) == ("tensor_core_bulk", 2)


def test_bulk_warp_split_candidate():
    """MLX_KERNELS_QMM_BULK_WARP_SPLIT=1 (off by default): where a block has
    fewer tiles than warps, teams of warps share each tile's k part instead of
    a cluster splitting K: 14336x4096 at M = 1 one k part with 4 warps on each
    of 7 tiles a block, 4096x4096 8 warps a tile (default: 4 of 16 warps
    busy); shapes with tiles for every warp keep one warp a tile. Every
    candidate plan passes the bulk plan's checks."""
    shapes = [(14336, 4096), (4096, 4096), (4096, 14336), (2048, 4096), (128256, 4096),
              (151936, 1024), (1000, 3584), (40, 8192)]
    expr = ("[_ext.plan_cuda_quantized_matmul(M, N, K, 64, 4, True, 'float16', sms) "
            f"for N, K in {shapes} for M in (1, 8, 16) for sms in (132, 16, 1)]")
    knob = "MLX_KERNELS_QMM_BULK_WARP_SPLIT"
    default = eval(plan_under({knob: None}, expr))
    on = eval(plan_under({knob: "1"}, expr))
    assert all(p["warp_split"] == 1 for p in default)
    keys = [(N, K, M, sms) for N, K in shapes for M in (1, 8, 16) for sms in (132, 16, 1)]
    for (N, K, M, sms), p in zip(keys, on):
        if p["kernel"] == "tensor_core_bulk":
            check_bulk_plan(p, M, N, K, 64, 4, sms)
    plans = dict(zip(keys, on))
    pick = lambda p: (p["split_k"], p["warp_split"], p["tiles_per_block"])
    assert pick(plans[14336, 4096, 1, 132]) == (1, 4, 7)  # 16 busy warps, 2 buffers each
    # M = 16: one k part would stage x for all of K (16 rows), leaving room for
    # one buffer a warp; the split with two buffers and as many stages wins
    assert pick(plans[14336, 4096, 16, 132])[1] == 1 and plans[14336, 4096, 16, 132]["ring"] == 2
    assert pick(plans[4096, 4096, 1, 132]) == (1, 8, 2)
    assert pick(plans[128256, 4096, 1, 132])[1] == 1  # 61 tiles a block
    assert pick(plans[1000, 3584, 1, 16]) == (1, 4, 4)  # 7 stages over 4 warps: 1, 2, 2, 2
    assert {p["warp_split"] for p in on} >= {1, 2, 4, 8}
    # with a cluster too (40 x 8192 on one SM: 8 k parts, pairs of warps)
    assert pick(plans[40, 8192, 1, 1])[:2] == (8, 2)


def test_bulk_compact_candidate():
    """MLX_KERNELS_QMM_BULK_COMPACT=1 (off by default): x staged in M + 1 rows
    and rings for the busy warps only, the freed shared memory deepening the
    rings (14336x4096 at M = 1: 3 stage buffers for 14 warps, not 2 for 16);
    with the warp split too, 4096x14336 at M = 1 fits one k part (8 warps a
    tile, no cluster). Default plans stage 8 rows a tile of x."""
    shapes = [(14336, 4096), (4096, 14336), (4096, 4096), (128256, 4096), (151936, 1024),
              (1000, 3584), (40, 8192)]
    ms = (1, 5, 8, 9, 16)
    expr = ("[_ext.plan_cuda_quantized_matmul(M, N, K, 64, 4, True, 'float16', sms, "
            f"{H100_CLUSTERS} if sms == 132 else None) "
            f"for N, K in {shapes} for M in {ms} for sms in (132, 16, 1)]")
    keys = [(N, K, M, sms) for N, K in shapes for M in ms for sms in (132, 16, 1)]
    knobs = {"MLX_KERNELS_QMM_BULK_COMPACT": None, "MLX_KERNELS_QMM_BULK_WARP_SPLIT": None}
    default = dict(zip(keys, eval(plan_under(knobs, expr))))
    compact = dict(zip(keys, eval(plan_under(
        dict(knobs, MLX_KERNELS_QMM_BULK_COMPACT="1"), expr))))
    both = dict(zip(keys, eval(plan_under(
        dict(knobs, MLX_KERNELS_QMM_BULK_COMPACT="1", MLX_KERNELS_QMM_BULK_WARP_SPLIT="1"), expr))))
    for plans in (default, compact, both):
        for (N, K, M, sms), p in plans.items():
            if p["kernel"] == "tensor_core_bulk":
                check_bulk_plan(p, M, N, K, 64, 4, sms)
    for (N, K, M, sms), p in default.items():
        if p["kernel"] == "tensor_core_bulk":
            assert p["x_rows"] == 8 * p["m_tiles"]
    for (N, K, M, sms), p in compact.items():
        if p["kernel"] == "tensor_core_bulk":
            assert p["x_rows"] == min(M + 1, 8 * p["m_tiles"])
    pick = lambda p: (p["split_k"], p["warp_split"], p["tiles_per_block"], p["ring"])
    # (session 13's H100 cluster capacities: two k parts of 14 tiles a block)
    assert pick(default[14336, 4096, 1, 132]) == (2, 1, 14, 2)
    assert pick(compact[14336, 4096, 1, 132]) == (2, 1, 14, 3)
    assert pick(both[4096, 14336, 1, 132])[:2] == (1, 8)


def bulk_warp_work(p, N):
    """The bulk kernel's work mapping (tc_qmm_bulk_kernel in quantized_matmul.cu,
    mirrored): for every block (grid x, y) and warp, the (tile, stage) pairs it
    streams and the partial-sum slots (sub, tile within the block) it writes."""
    tiles = math.ceil(N / 16)
    warps, ws, tpb = p["warps"], p["warp_split"], p["tiles_per_block"]
    spp, stages = p["steps_per_split"], p["num_steps"]
    teams = warps // ws
    for bx in range(p["grid"][0]):
        part_begin = bx * spp
        part_count = min(spp, stages - part_begin)
        for by in range(p["grid"][1]):
            tile_begin = by * tpb
            tile_end = min(tile_begin + tpb, tiles)
            for warp in range(warps):
                team, sub = warp // ws, warp % ws
                sub_first = sub * part_count // ws
                st_count = (sub + 1) * part_count // ws - sub_first
                my_tiles = ((tile_end - tile_begin - team + teams - 1) // teams
                            if tile_begin + team < tile_end else 0)
                pairs = [(tile_begin + team + teams * tl, part_begin + sub_first + li)
                         for tl in range(my_tiles) for li in range(st_count)]
                slots = [(sub, team + teams * tl) for tl in range(my_tiles)] if st_count else []
                yield bx, by, warp, pairs, slots


def test_bulk_work_mapping_covers_every_stage_once():
    """With the candidates on, over plans of every kind (one k part or a
    cluster, warp splits 1-8, uneven shares of a k part, N tails), the kernel's
    mapping streams every (tile, stage) of w exactly once, has every
    partial-sum slot the reduction reads written by exactly one warp (each
    warp-split member, each tile of the block), and only warps with stage
    rings (the busy ones, first) stream."""
    cases = [(N, K, M, sms) for N, K in [(14336, 4096), (4096, 14336), (4096, 4096),
                                         (1000, 3584), (40, 8192), (1000, 2048)]
             for M in (1, 9) for sms in (132, 16, 4, 1)]
    expr = ("[_ext.plan_cuda_quantized_matmul(M, N, K, 64, 4, True, 'float16', sms, "
            f"{H100_CLUSTERS} if sms == 132 else None) for N, K, M, sms in {cases}]")
    knobs = {"MLX_KERNELS_QMM_BULK_COMPACT": "1", "MLX_KERNELS_QMM_BULK_WARP_SPLIT": "1"}
    seen = set()
    for (N, K, M, sms), p in zip(cases, eval(plan_under(knobs, expr))):
        if p["kernel"] != "tensor_core_bulk":
            continue
        seen.add((p["warp_split"], p["split_k"] > 1))
        _, ring_warps = bulk_ring_warps(p, 64)
        covered, written = {}, {}
        for bx, by, warp, pairs, slots in bulk_warp_work(p, N):
            if pairs:
                assert warp < ring_warps, (N, K, M, sms, warp)
            for pair in pairs:
                covered[pair] = covered.get(pair, 0) + 1
            for sl in slots:
                assert sl not in written.setdefault((bx, by), set())  # one writer a slot
                written[bx, by].add(sl)
        if p["split_k"] > 1 or p["warp_split"] > 1:
            # every block has every slot of each of its tiles written
            assert len(written) == p["grid"][0] * p["grid"][1]
            for (bx, by), got in written.items():
                block_tiles = min(p["tiles_per_block"], math.ceil(N / 16) - by * p["tiles_per_block"])
                assert got == {(r, lt) for r in range(p["warp_split"])
                               for lt in range(block_tiles)}, (N, K, M, sms, bx, by)
        tiles = math.ceil(N / 16)
        assert set(covered) == {(t, st) for t in range(tiles) for st in range(p["num_steps"])}
        assert set(covered.values()) == {1}, (N, K, M, sms)
    assert {(1, False), (2, False), (4, False), (8, False), (2, True)} <= seen, seen


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
