"""The CUDA launch plan of flash_attention (plain C++, tested on any machine).

The kernels map their block index to work through the same inline functions
that ``blocks=True`` enumerates here, so the coverage checked below is the
kernels' own: every (batch, query head, query) row is served, and its keys
are visited exactly once across the decode splits (up to the causal limit for
prefill)."""

import itertools
import json

import pytest

import mlx_kernels as mk
from knob_env import output_under

plan_raw = mk._ext.plan_cuda_flash_attention


def plan(*args, **kwargs):
    """The plan as the op makes it, with the prefill choice pinned to "auto"
    (independent of MLX_KERNELS_ATTN_PREFILL in the test's environment)."""
    kwargs.setdefault("prefill", "auto")
    return plan_raw(*args, **kwargs)


DTYPES = ["float32", "float16", "bfloat16"]
HEAD_DIMS = [64, 80, 96, 128, 256]
MAX_STATIC_SMEM = 48 * 1024
MAX_DYNAMIC_SMEM = 227 * 1024


def visible_keys(qL, kL, mask, i):
    """Keys [0, n) a kernel must visit for query i (a query that sees no key
    under a causal mask averages every key, so it needs all of them)."""
    if mask != "causal" or i + kL - qL < 0:
        return kL
    return min(kL, i + kL - qL + 1)


def check_coverage(B, Hq, Hkv, qL, kL, D, dtype, mask, num_sms=132):
    p = plan(B, Hq, Hkv, qL, kL, D, dtype, mask, num_sms, blocks=True)
    blocks = p["blocks"]
    assert len(blocks) == p["grid"]
    G = Hq // Hkv
    keys = {}  # (b, hq, i) -> list of (k_begin, k_end)
    for b, hkv, k_begin, k_end, rows in blocks:
        assert 0 <= b < B and 0 <= hkv < Hkv
        assert 0 <= k_begin <= k_end <= kL
        assert rows, "a block without rows"
        for hq, i in rows:
            assert hq // G == hkv, "a row served with another KV head's keys"
            assert 0 <= hq < Hq and 0 <= i < qL
            keys.setdefault((b, hq, i), []).append((k_begin, k_end))
    assert len(keys) == B * Hq * qL, "some rows are not served"
    for (b, hq, i), ranges in keys.items():
        ranges.sort()
        if p["kernel"] in ("decode", "decode_mma"):
            # the splits partition [0, kL): each key exactly once
            assert len(ranges) == p["splits"], (b, hq, i)
            assert ranges[0][0] == 0 and ranges[-1][1] == kL
            for (_, e0), (s1, _) in zip(ranges, ranges[1:]):
                assert e0 == s1
            if kL > 0:
                assert all(e > s for s, e in ranges), "an empty split"
        else:
            assert len(ranges) == 1, (b, hq, i)
            (k_begin, k_end), = ranges
            assert k_begin == 0
            assert visible_keys(qL, kL, mask, i) <= k_end <= kL
    return p


def test_variant_for_every_query_length():
    for qL in range(0, 80):
        for dtype in DTYPES:
            p = plan(2, 8, 2, qL, 1000, 128, dtype, "causal")
            if qL == 0:
                assert p["kernel"] == "none" and p["grid"] == 0
            elif qL <= 8:
                rows = 4 * qL  # G * qL
                assert p["rows"] == rows
                if dtype == "float32":
                    assert p["kernel"] == "decode", qL
                    assert p["block_rows"] in (1, 2, 4, 8)
                    assert p["block_rows"] >= min(rows, 8) > p["block_rows"] // 2
                else:
                    # tensor cores: 16, 32 or 64 rows a block
                    assert p["kernel"] == "decode_mma", qL
                    assert p["block_rows"] in (16, 32, 64)
                    assert p["block_rows"] >= min(rows, 64)
                    assert p["block_rows"] == 16 or min(rows, 64) > p["block_rows"] // 2
                    assert p["block_k"] == 64
                assert p["row_tiles"] * p["block_rows"] >= rows > (p["row_tiles"] - 1) * p["block_rows"]
            else:
                # D = 128, causal, float16 / bfloat16: the wgmma prefill
                assert p["kernel"] == ("prefill_simt" if dtype == "float32" else "prefill_wgmma"), qL
                assert p["splits"] == 0 and p["merge_grid"] == 0
                if dtype != "float32":
                    assert plan(2, 8, 2, qL, 1000, 128, dtype, "causal", wgmma=False)["kernel"] == "prefill_mma"


def test_empty_problems_launch_nothing():
    for B, Hq, qL in [(0, 8, 5), (2, 0, 5), (2, 8, 0), (0, 8, 100)]:
        p = plan(B, Hq, max(Hq, 1) if Hq else 1, qL, 100, 64, "float16", "none")
        assert p["kernel"] == "none" and p["grid"] == 0 and p["merge_grid"] == 0


SMEM_PER_SM = 227 * 1024
WAVE_EFFICIENCY = 0.9


def ceil_div(a, b):
    return -(-a // b)


def blocks_per_sm(smem_bytes):
    """Resident 128-thread blocks an SM: 227 KB of shared memory with 1 KB
    reserved per block, 2048 threads, 32 blocks (registers not counted)."""
    return max(1, min(SMEM_PER_SM // (smem_bytes + 1024), 2048 // 128, 32))


H100_DRAM_GBS = 3352.0  # H100 SXM: 2619 MHz x 2 x 5120 bits (the plan binding's default)
H200_DRAM_GBS = 4915.2  # H200: 3200 MHz x 2 x 6144 bits


def wave_blocks(dtype, block_rows, residency, num_sms=132, dram_gbs=H100_DRAM_GBS, card_wave=False):
    """The blocks an SM the split rule counts as one wave, written out: the
    residency for float32; for the tensor-core decode one, or with the
    card-aware candidate (MLX_KERNELS_ATTN_CARD_WAVE=1) and 32 rows a block or
    more as many as draw the card's peak DRAM bandwidth at 23.3 GB/s an SM a
    block (rounded, within [1, residency])."""
    if dtype == "float32":
        return residency
    if not card_wave or block_rows < 32:
        return 1
    return min(max(round(dram_gbs / (23.3 * num_sms)), 1), residency)


def launched_chunk(kL, s):
    """Keys a split when kL keys are cut into s chunks rounded up to 64 keys."""
    return ceil_div(ceil_div(max(kL, 1), s), 64) * 64


def launched_splits(kL, s):
    """Splits actually launched when kL keys are cut into s chunks rounded up
    to 64 keys."""
    return max(ceil_div(kL, launched_chunk(kL, s)), 1)


def wave_efficiency(grid, capacity):
    return grid / (ceil_div(grid, capacity) * capacity)


def rule_splits(base, kL, capacity, min_split_keys, launched=True):
    """The split rule written out: the smallest requested split count whose
    launched grid (base blocks a split) reaches 90% wave efficiency, else the
    most efficient (smallest of equals); as launched (launched=False: the
    count requested)."""
    effs = [(wave_efficiency(base * launched_splits(kL, s), capacity), s)
            for s in range(1, min(max(kL // min_split_keys, 1), 256) + 1)]
    good = [s for e, s in effs if e >= WAVE_EFFICIENCY]
    want = good[0] if good else max(effs, key=lambda es: (es[0], -es[1]))[1]
    return launched_splits(kL, want) if launched else want


@pytest.mark.parametrize(
    "B,Hq,Hkv,kL,splits16,splits32",
    [
        # float16 (tensor-core decode): a wave is ONE block an SM, 132 blocks;
        # float32: the residency, 16 blocks an SM (20 KB static,
        # threads-limited), 2112 a wave
        (1, 32, 8, 65536, 15, 256),  # 8 blocks before splitting: 15 x 8 = 120 (91%)
        (1, 32, 8, 4096, 16, 16),  # below one wave: the fewest splits reaching 90% (float16),
                                   # as many as 256-key splits allow (float32)
        (64, 32, 8, 4096, 1, 4),  # float16: 512 blocks = 97% of 4 waves unsplit
        (256, 32, 8, 4096, 1, 1),  # 2048 blocks = 97% of 16 waves / of one float32 wave
        (1, 1, 1, 1 << 20, 119, 256),  # float16: 119 splits = 90% of a wave; float32: capped
        (1, 8, 8, 255, 1, 1),  # never below 128 keys a split (float16), 256 (float32)
        (1, 8, 8, 383, 2, 1),
        (1, 2, 2, 0, 1, 1),  # no keys
    ],
)
def test_decode_split_rule(B, Hq, Hkv, kL, splits16, splits32):
    """The fewest splits whose grid reaches 90% wave efficiency, at least 128
    keys a split (float16; float32: 256), at most 256 splits, chunks multiple
    of 64."""
    for dtype, splits in (("float16", splits16), ("float32", splits32)):
        p = plan(B, Hq, Hkv, 1, kL, 128, dtype, "none")
        check_split(p, B, Hq, kL, splits)


def check_split(p, B, Hq, kL, splits):
    assert p["kernel"] in ("decode", "decode_mma")
    assert p["splits"] == splits, p
    assert p["chunk"] % 64 == 0
    assert p["splits"] * p["chunk"] >= kL
    assert kL > (p["splits"] - 1) * p["chunk"] or kL == 0
    assert p["min_split_keys"] == (256 if p["kernel"] == "decode" else 128)
    if splits > 1:
        assert p["chunk"] >= p["min_split_keys"]
        assert p["merge_grid"] == B * Hq
        assert p["merge_block"] == (256 if p["merge_wide"] else 128)
    else:
        assert p["merge_grid"] == 0


@pytest.mark.parametrize("dram_gbs", [H100_DRAM_GBS, H200_DRAM_GBS])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("num_sms", [132, 78, 16])
def test_decode_wave_rule(dtype, num_sms, dram_gbs):
    """Against the rule written out here: resident blocks from shared memory;
    a wave of wave_blocks() blocks an SM and at least 128 keys a split for the
    tensor-core decode (float16, bfloat16), the resident blocks and 256 keys
    for the float32 one; the smallest requested
    split count whose launched grid reaches 90% wave efficiency, else the
    most efficient (smallest of equals)."""
    shapes = itertools.product([1, 2, 4, 16, 64], [(32, 8), (8, 8), (64, 8), (96, 1)], [1, 4, 8],
                               [1, 300, 1024, 2048, 5000, 8192, 32768])
    for B, (Hq, Hkv), qL, kL in shapes:
        p = plan(B, Hq, Hkv, qL, kL, 128, dtype, "causal", num_sms, dram_gbs=dram_gbs)
        assert p["blocks_per_sm"] == blocks_per_sm(p["smem_bytes"])
        assert p["wave_blocks_per_sm"] == wave_blocks(dtype, p["block_rows"], p["blocks_per_sm"],
                                                      num_sms, dram_gbs)
        capacity = p["wave_blocks_per_sm"] * num_sms
        base = B * Hkv * p["row_tiles"]
        assert p["min_split_keys"] == (256 if dtype == "float32" else 128)
        assert p["splits"] == rule_splits(base, kL, capacity, p["min_split_keys"]), (B, Hq, Hkv, qL, kL, p)
        assert p["grid"] == base * p["splits"]
        assert p["wave_efficiency"] == pytest.approx(wave_efficiency(p["grid"], capacity))


CARD_WAVE_CASES = [  # (B, Hq, qL, kL, num_sms, dram_gbs)
    (16, 32, qL, 32768, 132, dram) for qL in (1, 4, 8) for dram in (H100_DRAM_GBS, H200_DRAM_GBS)
] + [(16, 64, 8, 32768, 132, H200_DRAM_GBS),  # 64 rows a block
     (16, 32, 8, 32768, 132, 0.0),  # no bandwidth reported
     (16, 32, 8, 32768, 132, 100 * H200_DRAM_GBS),  # bounded by the residency (2)
     (16, 32, 8, 32768, 78, H100_DRAM_GBS),  # 3.35 TB/s on 78 SMs
     (16, 32, 8, 1024, 132, H200_DRAM_GBS), (4, 32, 8, 16384, 132, H200_DRAM_GBS),
     (1, 32, 8, 32768, 132, H200_DRAM_GBS)]


def test_decode_card_wave_candidate():
    """MLX_KERNELS_ATTN_CARD_WAVE=1 (a candidate, off by default): one 32-row
    block an SM streams ~3.07 TB/s on 132 SMs, enough for the H100 SXM (one
    block an SM), not for the H200, whose wave at qL = 8 (32 and 64 rows a
    block) becomes two blocks an SM where the splits that follow hold at
    least 1024 keys (else the one-block wave's plan); 16-row blocks (qL 1 and
    4) keep one on both. Unset, every card gets one."""
    code = ("import json, mlx_kernels as mk; p = mk._ext.plan_cuda_flash_attention; "
            "print(json.dumps([(lambda q: [q['wave_blocks_per_sm'], q['splits'], q['chunk'], "
            "q['block_rows'], q['blocks_per_sm'], q['row_tiles']])(p(B, Hq, 8, qL, kL, 128, 'float16', "
            f"'causal', sms, dram_gbs=dram)) for B, Hq, qL, kL, sms, dram in {CARD_WAVE_CASES}]))")
    for card_wave in (False, True):
        got = json.loads(output_under({"MLX_KERNELS_ATTN_CARD_WAVE": "1" if card_wave else None}, code))
        for case, (wave, splits, chunk, rows, bps, row_tiles) in zip(CARD_WAVE_CASES, got):
            B, Hq, qL, kL, sms, dram = case
            base = B * 8 * row_tiles
            want = wave_blocks("float16", rows, bps, sms, dram, card_wave)
            if want > 1 and launched_chunk(kL, rule_splits(base, kL, want * sms, 128, launched=False)) < 1024:
                want = 1  # short splits: the one-block wave's plan
            assert wave == want, (card_wave, case)
            assert splits == rule_splits(base, kL, wave * sms, 128), (card_wave, case)
            assert chunk == launched_chunk(kL, rule_splits(base, kL, wave * sms, 128, launched=False))
        waves = {case: w for case, (w, *_) in zip(CARD_WAVE_CASES, got)}
    # with the candidate on (the last loop): the H200's qL = 8 wave is 2, the rest as written
    assert [waves[(16, 32, qL, 32768, 132, H200_DRAM_GBS)] for qL in (1, 4, 8)] == [1, 1, 2]
    # H200, qL 8: B 16 at kL 1k would take 2 splits of 512 keys (one block an SM:
    # 1 split); B 1 at 32k takes 31 of 1088
    assert waves[(16, 32, 8, 1024, 132, H200_DRAM_GBS)] == 1
    assert waves[(4, 32, 8, 16384, 132, H200_DRAM_GBS)] == 2  # 8 splits of 2048
    assert waves[(1, 32, 8, 32768, 132, H200_DRAM_GBS)] == 2
    assert [waves[(16, 32, qL, 32768, 132, H100_DRAM_GBS)] for qL in (1, 4, 8)] == [1, 1, 1]
    assert waves[(16, 64, 8, 32768, 132, H200_DRAM_GBS)] == 2
    assert waves[(16, 32, 8, 32768, 132, 0.0)] == 1
    assert waves[(16, 32, 8, 32768, 132, 100 * H200_DRAM_GBS)] == 2
    assert waves[(16, 32, 8, 32768, 78, H100_DRAM_GBS)] == 2
    # H200, B 16, qL 8, kL 32k: 128 blocks unsplit (a wave of 132 by default);
    # the candidate's 2 splits fill 97% of 264
    assert plan(16, 32, 8, 8, 32768, 128, "float16", "causal", 132, dram_gbs=H200_DRAM_GBS)["splits"] == 1
    assert got[5][1] == 2  # the same case with the candidate on


def test_decode_blocks_per_sm():
    """DecodeMma, D = 128: 16 rows (72 KB) -> 3 blocks an SM, 32 or 64 rows ->
    2 (as ptxas's 140 / 169 / 190 registers also allow); D = 256: one."""
    for qL, want in [(1, 3), (4, 3), (8, 2)]:
        assert plan(1, 32, 8, qL, 4096, 128, "float16", "causal")["blocks_per_sm"] == want
    assert plan(1, 64, 8, 8, 4096, 128, "float16", "causal")["blocks_per_sm"] == 2  # 64 rows
    assert plan(1, 32, 8, 1, 4096, 256, "float16", "none")["blocks_per_sm"] == 1
    assert plan(1, 32, 8, 100, 4096, 128, "float16", "causal")["blocks_per_sm"] == 0  # prefill


def test_decode_fills_the_machine():
    """B * kL >= 64k, Hq 32, Hkv 8: at least one nearly full wave (>= 90%) of
    one block an SM, and no more splits than that takes."""
    for B, kL in [(1, 65536), (4, 16384), (16, 4096), (64, 1024)]:
        for qL in (1, 4, 8):
            p = plan(B, 32, 8, qL, kL, 128, "float16", "causal" if qL > 1 else "none")
            assert p["wave_blocks_per_sm"] == 1
            assert p["grid"] >= WAVE_EFFICIENCY * 132, (B, kL, qL, p["grid"])
            assert p["wave_efficiency"] >= WAVE_EFFICIENCY
    # B 16, qL 1, kL 2048: 8 splits under the first rule, 3 (384 blocks) under
    # the residency wave; now 1 split, 128 blocks, no merge
    p = plan(16, 32, 8, 1, 2048, 128, "float16", "none")
    assert (p["splits"], p["grid"], p["merge_grid"]) == (1, 128, 0)
    # B 1, kL 16k and 32k (43 and 47 splits before): 15
    for kL in (16384, 32768):
        assert plan(1, 32, 8, 1, kL, 128, "float16", "none")["splits"] == 15
    # fewer SMs: fewer splits (8 x 8 = 64 blocks of 66)
    assert plan(1, 32, 8, 1, 65536, 128, "float16", "none", 66)["splits"] == 8


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", HEAD_DIMS)
def test_coverage_and_shared_memory(D, dtype):
    shapes = itertools.product([1, 2], [(8, 8), (8, 2), (6, 1), (3, 3)], [1, 3, 8, 9, 33, 64, 65, 130], [0, 1, 77, 300, 1500])
    for B, (Hq, Hkv), qL, kL in shapes:
        for mask in ["none", "causal"]:
            p = check_coverage(B, Hq, Hkv, qL, kL, D, dtype, mask)
            assert p["block"] == (384 if p["kernel"] == "prefill_wgmma" else 128)
            if p["kernel"] == "prefill_mma":
                bq, bk = (128, 64 if D == 64 else 32) if D <= 128 else (64, 32)
                assert p["block_q"] == bq and p["block_k"] == bk
                # Q [bq][D + 8] + 2 stages of K, V [bk][D + 8], 2-byte elements
                assert p["smem_bytes"] == (bq + 4 * bk) * (D + 8) * 2 <= MAX_DYNAMIC_SMEM
                # two blocks an SM (228 KB, 1 KB reserved a block)
                assert 2 * (p["smem_bytes"] + 1024) <= 228 * 1024
            elif p["kernel"] == "prefill_wgmma":
                assert D in (64, 128) and dtype != "float32" and kL > 0
                assert p["block"] == 384 and p["block_q"] == 128 and p["block_k"] == 128
                # 1 KB alignment slack + Q [128][D] + 2 stages of K, V [128][D]
                assert p["smem_bytes"] == 1024 + 2 * D * (128 + 4 * 128) <= MAX_DYNAMIC_SMEM - 1024
            elif p["kernel"] == "prefill_simt":
                bk = 32 if D <= 128 else 16
                assert p["block_q"] == 32 and p["block_k"] == bk
                assert p["smem_bytes"] == 2 * bk * D * 4 <= MAX_STATIC_SMEM
            elif p["kernel"] == "decode_mma":
                rt = p["block_rows"]
                # Q [rt][D + 8] + 2 stages of K, V [64][D + 8], 2-byte elements
                assert p["smem_bytes"] == 2 * (rt + 4 * 64) * (D + 8) <= MAX_DYNAMIC_SMEM
                # the final reduction [4][16][D] + [4][16][2] floats fits the stages
                assert 4 * (4 * 16 * D + 4 * 16 * 2) <= 2 * 4 * 64 * (D + 8)
            else:
                rt = p["block_rows"]
                assert p["smem_bytes"] == 4 * (5 * rt * D + 8 * rt) <= MAX_STATIC_SMEM


@pytest.mark.parametrize(
    "B,Hq,Hkv,qL,kL,mask",
    [
        (1, 32, 8, 1, 65536, "none"),  # many splits
        (2, 24, 8, 5, 3000, "causal"),  # groups of 3, 15 rows in tiles of 8
        (1, 96, 1, 3, 700, "bool"),  # a wide group: 288 rows
        (3, 4, 2, 7, 1025, "additive"),
        (1, 8, 8, 8, 1, "causal"),  # qL > kL
        (2, 32, 2, 8, 777, "causal"),  # 128 rows a KV head: two tiles of 64
        (1, 40, 8, 7, 5000, "none"),  # 35 rows: one tile of 64
        (4, 32, 8, 8, 32768, "causal"),  # the benchmark's largest decode
        (1, 4, 2, 300, 257, "causal"),  # prefill, queries that see no key
        (2, 4, 1, 1000, 1000, "causal"),
    ],
)
def test_coverage_odd_shapes(B, Hq, Hkv, qL, kL, mask):
    for dtype in ("float32", "float16"):
        check_coverage(B, Hq, Hkv, qL, kL, 128, dtype, mask)


def test_prefill_causal_skips_tiles_above_the_diagonal():
    """qL = kL = 4096: a query tile visits keys up to its diagonal only."""
    p = plan(1, 1, 1, 4096, 4096, 128, "float16", "causal", blocks=True)
    for _, _, k_begin, k_end, rows in p["blocks"]:
        last_query = rows[-1][1]
        assert k_end == last_query + 1
    # longest tiles first
    assert p["blocks"][0][3] == 4096
    # across heads and batch too: the key ranges never grow along the grid
    for dtype in ("float16", "float32"):
        p = plan(2, 8, 2, 1000, 1000, 128, dtype, "causal", blocks=True)
        ends = [k_end for _, _, _, k_end, _ in p["blocks"]]
        assert ends == sorted(ends, reverse=True)
        assert ends[: 2 * 8] == [1000] * 16


def test_grid_limits():
    with pytest.raises(ValueError):
        plan(1 << 20, 4096, 1, 8, 10, 64, "float32", "none")  # > 2^31 - 1 blocks
    with pytest.raises(ValueError):
        plan(1 << 24, 4096, 1, 8, 10, 64, "float16", "none")  # 64 rows a block: 2^33
    with pytest.raises(ValueError):
        plan(1, 1, 1, 1, 10, 72, "float16", "none")  # no kernel for D = 72


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_decode_mma_reads_each_key_once_per_split(dtype):
    """Tensor-core decode: up to 64 (head, query) rows of a KV head share one
    block, so K / V rows are read once per (batch, KV head, split); wider
    groups take ceil(rows / 64) row tiles."""
    for qL in range(1, 9):
        for Hq, Hkv in [(32, 8), (8, 8), (64, 8), (96, 1)]:
            p = plan(4, Hq, Hkv, qL, 32768, 128, dtype, "causal")
            rows = Hq // Hkv * qL
            assert p["kernel"] == "decode_mma"
            assert p["row_tiles"] == -(-rows // 64)
            assert p["grid"] == 4 * Hkv * p["row_tiles"] * p["splits"]
            assert p["chunk"] % p["block_k"] == 0


WGMMA_HEAD_DIMS = (64, 128)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", HEAD_DIMS)
@pytest.mark.parametrize("mask", ["none", "causal", "bool", "additive"])
def test_prefill_wgmma_routing(dtype, D, mask):
    """The wgmma prefill serves exactly float16 / bfloat16, D 64 or 128, mask
    none or causal, qL > 8, kL > 0, on builds and devices that run it;
    everything else keeps its kernel."""
    for qL, kL in [(9, 9), (100, 0), (300, 257), (4096, 4096), (1, 4096), (8, 100)]:
        p = plan(1, 8, 2, qL, kL, D, dtype, mask, prefill="auto")
        wants = dtype != "float32" and D in WGMMA_HEAD_DIMS and mask in ("none", "causal") and qL > 8 and kL > 0
        assert (p["kernel"] == "prefill_wgmma") == wants, (qL, kL, p["kernel"])
        # the fallbacks: no sm_90a body, or the environment switch
        for q in (plan(1, 8, 2, qL, kL, D, dtype, mask, wgmma=False, prefill="auto"),
                  plan(1, 8, 2, qL, kL, D, dtype, mask, prefill="mma")):
            if qL > 8:
                assert q["kernel"] == ("prefill_simt" if dtype == "float32" else "prefill_mma")
            else:
                assert q["kernel"] == p["kernel"]
        if wants:
            assert p["grid"] == -(-qL // 128) * 8 and p["q_tiles"] == -(-qL // 128)
            check_coverage(1, 8, 2, qL, kL, D, dtype, mask)


def test_prefill_wgmma_causal_order_and_extent():
    """128-query blocks, heaviest first, each visiting keys up to its last
    query's diagonal (the kernel's tile count is ceil(k_end / 128))."""
    p = plan(1, 32, 8, 4096, 4096, 128, "float16", "causal", blocks=True, prefill="auto")
    assert p["kernel"] == "prefill_wgmma"
    ends = [k_end for _, _, _, k_end, _ in p["blocks"]]
    assert ends == sorted(ends, reverse=True) and ends[0] == 4096 and ends[-1] == 128
    for _, _, _, k_end, rows in p["blocks"]:
        assert k_end == rows[-1][1] + 1 and len(rows) == 128


def test_prefill_env_switch(tmp_path):
    """MLX_KERNELS_ATTN_PREFILL=mma forces the mma.sync prefill (read once per
    process); unset or another value leaves the choice to the plan."""
    code = ("import mlx_kernels as mk; p = mk._ext.plan_cuda_flash_attention; "
            "print(p(1, 32, 8, 4096, 4096, 128, 'float16', 'causal')['kernel'], "
            "p(1, 32, 8, 4096, 4096, 128, 'float16', 'causal', prefill='auto')['kernel'])")
    for value, want in [("mma", "prefill_mma prefill_wgmma"), ("", "prefill_wgmma prefill_wgmma"),
                        ("wgmma", "prefill_wgmma prefill_wgmma"), (None, "prefill_wgmma prefill_wgmma")]:
        out = output_under({"MLX_KERNELS_ATTN_PREFILL": value}, code)
        assert " ".join(out.split()) == want, (value, out)


def test_merge_wide_env_switch():
    """MLX_KERNELS_ATTN_MERGE_WIDE (A/B runs; read once per process): 1 gives
    every split decode the 8-warp merge kernel (merge_block 256), 0 the 4-warp
    one (128); unset, the plan's rule; unsplit plans have no merge."""
    code = ("import mlx_kernels as mk; p = mk._ext.plan_cuda_flash_attention; "
            "print(*[(lambda q: (q['splits'] > 1, q['merge_wide'], q['merge_block']))("
            "p(B, 32, 8, 1, kL, 128, 'float16', 'none', 132)) "
            "for B, kL in ((1, 32768), (4, 4096), (16, 256))])")
    for value, want in [(None, "(True, True, 256) (True, False, 128) (False, False, 0)"),
                        ("", "(True, True, 256) (True, False, 128) (False, False, 0)"),
                        ("0", "(True, False, 128) (True, False, 128) (False, False, 0)"),
                        ("1", "(True, True, 256) (True, True, 256) (False, False, 0)")]:
        out = output_under({"MLX_KERNELS_ATTN_MERGE_WIDE": value}, code)
        assert out == want, (value, out)


@pytest.mark.parametrize("num_sms", [132, 78, 16])
def test_merge_wide_rule(num_sms):
    """The 8-warp merge where a row has at least 8 splits and there are at
    most 2 rows an SM (measured: attn_plan.cpp); the 4-warp merge elsewhere."""
    seen = set()
    shapes = itertools.product([1, 2, 4, 16, 64], [(32, 8), (8, 8), (64, 8)], [1, 4, 8],
                               [512, 2048, 8192, 32768, 100000])
    for B, (Hq, Hkv), qL, kL in shapes:
        for dtype in ("float16", "float32"):
            p = plan(B, Hq, Hkv, qL, kL, 128, dtype, "none", num_sms)
            if p["splits"] == 1:
                assert p["merge_grid"] == 0
                continue
            rows = B * Hq * qL
            assert p["merge_grid"] == rows
            want = p["splits"] >= 8 and rows <= 2 * num_sms
            assert p["merge_wide"] == want, (B, Hq, Hkv, qL, kL, dtype, p)
            assert p["merge_block"] == (256 if want else 128)
            seen.add(want)
    assert seen == {True, False}


def test_decode_split_knobs():
    """MLX_KERNELS_ATTN_SPLIT_BLOCKS_PER_SM and MLX_KERNELS_ATTN_MIN_SPLIT_KEYS
    (A/B runs; read once per process) replace the wave's blocks an SM (0: the
    residency, the rule before session 20) and the fewest keys a split in the
    same rule, for both decode kernels; blocks_per_sm stays the residency.
    Values are clamped (0-32 blocks, at least 64 keys)."""
    shapes = [(1, 32, 8, 1, 16384, "float16"), (1, 32, 8, 1, 32768, "float16"),
              (1, 32, 8, 8, 1024, "float16"), (4, 32, 8, 8, 1024, "float16"),
              (16, 32, 8, 1, 4096, "float16"), (1, 32, 8, 1, 300, "float16"),
              (1, 32, 8, 1, 65536, "float32"), (16, 32, 8, 4, 4096, "float32")]
    code = ("import json, mlx_kernels as mk; p = mk._ext.plan_cuda_flash_attention; "
            "print(json.dumps([(lambda q: [q['splits'], q['row_tiles'], q['blocks_per_sm'], "
            "q['wave_blocks_per_sm'], q['min_split_keys'], q['wave_efficiency']])"
            "(p(B, Hq, Hkv, qL, kL, 128, dt, 'causal', 132)) "
            f"for B, Hq, Hkv, qL, kL, dt in {shapes}]))")
    default = [plan(B, Hq, Hkv, qL, kL, 128, dt, "causal", 132) for B, Hq, Hkv, qL, kL, dt in shapes]
    residency = "residency"
    for knobs, wave_blocks, min_keys in [
            ({}, None, None),
            ({"MLX_KERNELS_ATTN_SPLIT_BLOCKS_PER_SM": "2"}, 2, None),
            ({"MLX_KERNELS_ATTN_SPLIT_BLOCKS_PER_SM": "0"}, residency, None),
            ({"MLX_KERNELS_ATTN_SPLIT_BLOCKS_PER_SM": "-4"}, residency, None),
            ({"MLX_KERNELS_ATTN_SPLIT_BLOCKS_PER_SM": "1"}, 1, None),
            ({"MLX_KERNELS_ATTN_MIN_SPLIT_KEYS": "512"}, None, 512),
            ({"MLX_KERNELS_ATTN_MIN_SPLIT_KEYS": "1"}, None, 64),
            ({"MLX_KERNELS_ATTN_SPLIT_BLOCKS_PER_SM": "99",
              "MLX_KERNELS_ATTN_MIN_SPLIT_KEYS": "1024"}, 32, 1024)]:
        got = json.loads(output_under(knobs, code))
        for (B, Hq, Hkv, qL, kL, dt), (splits, row_tiles, bps, wave, keys, eff), d in zip(shapes, got, default):
            assert bps == d["blocks_per_sm"] and row_tiles == d["row_tiles"]
            if wave_blocks is None:  # the default: one block an SM but for float32
                want_wave = bps if dt == "float32" else 1
            else:
                want_wave = bps if wave_blocks == residency else wave_blocks
            assert wave == want_wave, (knobs, dt)
            want_keys = min_keys or (256 if dt == "float32" else 128)  # None: the default
            assert keys == want_keys, (knobs, dt)
            capacity = want_wave * 132
            want = rule_splits(B * Hkv * row_tiles, kL, capacity, want_keys)
            assert splits == want, (knobs, B, qL, kL, dt, splits, want)
            assert eff == pytest.approx(wave_efficiency(B * Hkv * row_tiles * splits, capacity))
        if knobs:
            assert [g[0] for g in got] != [d["splits"] for d in default], knobs


def test_peak_dram_bandwidth_binding():
    """On a CUDA build the GPU's peak DRAM bandwidth, as the plan reads it
    (memory clock x bus width: 3352 GB/s on an H100 SXM, ~4915 on an H200);
    elsewhere a clear NotImplementedError naming the binding."""
    import mlx.core as mx

    if mx.cuda.is_available():
        assert 500.0 <= mk._ext.cuda_peak_dram_gbs() <= 20000.0
    else:
        with pytest.raises(NotImplementedError, match="cuda_peak_dram_gbs: .*no CUDA backend"):
            mk._ext.cuda_peak_dram_gbs()
