"""The Metal launch plan of flash_attention (plain C++, tested on Linux), and
the shuffled-schedule mode of the simulator over every attention kernel
variant (prefill, decode, decode with split keys + merge)."""

import itertools

import mlx.core as mx
import pytest

import mlx_kernels as mk
from attn_cases import make_mask, make_qkv, reference64
from tolerances import ATTN_REF64, rel_err, to_np64

plan = mk._ext.plan_metal_flash_attention
DTYPES = ["float32", "float16", "bfloat16"]
HEAD_DIMS = [64, 80, 96, 128, 256]
MASKS = ["none", "causal", "bool", "additive"]


def needs_simulator():
    if not mk.metal_simulator_available():
        pytest.skip("Metal simulator not built: " + mk._ext.metal_simulator_status()[1])


def test_variant_for_every_query_length():
    """qL <= 8: decode (GQA rows share a threadgroup); qL > 8: prefill tiles."""
    for qL in range(1, 80):
        p = plan(2, 8, 2, qL, 1000, 128, "causal", "float16")
        if qL <= 8:
            assert p["kernel"] == "decode", qL
            rows = 4 * qL  # G * qL
            assert p["rows"] in (1, 2, 4, 8) and p["rows"] >= min(rows, 8) > p["rows"] // 2, qL
            assert p["row_tiles"] * p["rows"] >= rows > (p["row_tiles"] - 1) * p["rows"]
            assert p["name"] == f"mlxk_attn_decode_float16_d128_r{p['rows']}"
        else:
            assert p["kernel"] == "prefill", qL
            assert p["name"] == "mlxk_attn_prefill_float16_d128"
            assert p["splits"] == 1 and p["merge_name"] == ""


@pytest.mark.parametrize(
    "B,Hq,Hkv,kL,splits",
    [
        (1, 32, 8, 4096, 16),  # 8 threadgroups without splitting: 16 x 256 keys
        (1, 4, 1, 1024, 4),  # one KV head: as many splits as 256-key chunks
        (1, 8, 1, 1500, 4),  # 1500 keys: chunks of 384 (multiple of 128)
        (1, 8, 8, 255, 1),  # short: never split below 256 keys per split
        (64, 32, 8, 4096, 1),  # 512 threadgroups already: no split
        (4, 32, 8, 4096, 4),  # 32 threadgroups -> 4 splits = 128
        (1, 1, 1, 1 << 20, 64),  # capped at 64 splits
        (1, 2, 2, 0, 1),  # no keys
    ],
)
def test_decode_split_rule(B, Hq, Hkv, kL, splits):
    """Splits from B * Hkv * row tiles and kL: enough threadgroups (about 128),
    at least 256 keys per split, at most 64 splits."""
    p = plan(B, Hq, Hkv, 1, kL, 128, "none", "float32")
    assert p["kernel"] == "decode"
    assert p["splits"] == splits, p
    assert p["chunk"] % 128 == 0
    assert p["splits"] * p["chunk"] >= kL
    assert kL > (p["splits"] - 1) * p["chunk"] or kL == 0
    if splits > 1:
        assert p["chunk"] >= 256
        assert p["merge_name"] == "mlxk_attn_merge_float32_d128"
        assert p["merge_grid"] == (B * Hq, 1, 1) and p["merge_threadgroup"] == (32, 1, 1)
    else:
        assert p["merge_name"] == ""


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", HEAD_DIMS)
def test_grid_covers_problem_and_memory_fits(D, dtype):
    for B, Hq, Hkv, qL, kL in itertools.product([1, 3], [8], [1, 2, 8], [1, 3, 8, 9, 33, 300], [0, 1, 77, 1500]):
        p = plan(B, Hq, Hkv, qL, kL, D, "causal", dtype)
        gx, gy, gz = p["grid"]
        assert p["threadgroup"] == (128, 1, 1)
        assert p["threadgroup_memory"] <= 32 * 1024, p
        if p["kernel"] == "prefill":
            assert p["block_q"] == 32 and p["block_k"] == {64: 32, 80: 32, 96: 32, 128: 16, 256: 8}[D]
            assert gx * 32 >= qL > (gx - 1) * 32 and gy == Hq and gz == B
            assert p["threadgroup_memory"] == 2 * p["block_k"] * (D + 8) * (4 if dtype == "float32" else 2)
        else:
            G = Hq // Hkv
            assert gx == p["splits"] and gy == Hkv and gz == B * p["row_tiles"]
            assert p["rows"] * p["row_tiles"] >= G * qL
            assert gx * p["chunk"] >= kL


def test_every_planned_kernel_exists():
    needs_simulator()
    names = set(mk._ext.metal_simulator_kernels())
    planned = set()
    for dtype, D, (Hq, Hkv), qL, kL in itertools.product(
        DTYPES, HEAD_DIMS, [(8, 8), (8, 4), (8, 2), (8, 1), (2, 2)], [1, 2, 5, 8, 9, 64], [1, 300, 5000]
    ):
        p = plan(1, Hq, Hkv, qL, kL, D, "none", dtype)
        planned.add(p["name"])
        if p["merge_name"]:
            planned.add(p["merge_name"])
    missing = planned - names
    assert not missing, f"planned kernels missing from the library: {sorted(missing)[:5]}"
    # and no attention instantiation is dead weight
    assert {n for n in names if n.startswith("mlxk_attn_")} == planned


# One configuration of each kernel variant under the shuffled schedule: every
# suspension (barrier, SIMD-group function, simdgroup_matrix operation)
# resumes threads in a random order. (B, Hq, Hkv, qL, kL, D, mask, variant)
VARIANTS = [
    pytest.param(1, 2, 1, 40, 75, 80, "causal", "prefill", id="prefill-d80-causal"),
    pytest.param(2, 2, 2, 33, 50, 256, "bool", "prefill", id="prefill-d256-bool"),
    pytest.param(2, 8, 2, 3, 77, 96, "additive", "decode", id="decode-gqa"),
    pytest.param(1, 8, 1, 1, 1100, 128, "bool", "decode-split", id="decode-split-merge"),
    pytest.param(1, 4, 2, 5, 700, 64, "causal", "decode-split", id="decode-split-causal"),
]


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("B,Hq,Hkv,qL,kL,D,mask,variant", VARIANTS)
def test_shuffled_schedule(B, Hq, Hkv, qL, kL, D, mask, variant, seed):
    needs_simulator()
    p = plan(B, Hq, Hkv, qL, kL, D, mask, "float16")
    assert p["kernel"] == variant.split("-")[0]
    assert (p["splits"] > 1) == variant.endswith("split")
    q, k, v = make_qkv(B, Hq, Hkv, qL, kL, D, mx.float16)
    m = None if mask == "none" else make_mask(mask, (B, Hq, qL, kL), mx.float16)
    scale = D**-0.5
    with mk.metal_simulator(shuffle=True, seed=seed):
        out = mk.flash_attention(q, k, v, scale=scale, mask=m, stream=mx.cpu)
        mx.eval(out)
    ref64 = reference64(q, k, v, scale, m)
    assert rel_err(to_np64(out), ref64) <= ATTN_REF64[mx.float16]
    native = mk.flash_attention(q, k, v, scale=scale, mask=m, stream=mx.cpu)
    assert rel_err(to_np64(out), to_np64(native)) <= ATTN_REF64[mx.float16]


def test_simulator_choice_is_recorded_at_call_time():
    """An op called under metal_simulator() and evaluated after the context
    has exited still runs in the simulator (the choice lives in the primitive):
    bitwise equal to an evaluation inside the context, and not the native
    kernel's bits (another summation order)."""
    needs_simulator()
    q, k, v = make_qkv(1, 2, 1, 1, 300, 64, mx.float32)
    with mk.metal_simulator():
        lazy = mk.flash_attention(q, k, v, scale=0.125, stream=mx.cpu)
        eager = mk.flash_attention(q, k, v, scale=0.125, stream=mx.cpu)
        mx.eval(eager)
    native = mk.flash_attention(q, k, v, scale=0.125, stream=mx.cpu)
    mx.eval(lazy, native)
    assert mx.array_equal(lazy, eager).item()
    assert not mx.array_equal(lazy, native).item()
    ref64 = reference64(q, k, v, 0.125, None)
    assert rel_err(to_np64(lazy), ref64) <= ATTN_REF64[mx.float32]
