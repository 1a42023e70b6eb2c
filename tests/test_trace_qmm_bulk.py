"""benchmarks/trace_qmm_bulk.py without a GPU: the summary of a synthetic
trace record whose times are known, its loud failures, and the bindings on a
build without the CUDA backend."""

import sys
from pathlib import Path

import numpy as np
import pytest

from mlx_kernels import _ext

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import trace_qmm_bulk as tq  # noqa: E402

HEAD, PAIRS = 9, 4
WORDS = HEAD + 2 * PAIRS


def warp_record(gt0_ns, c0, ghz, x_at, pairs, end_at, loop_at=None, sm=0, issued_at=None,
                barrier_at=None):
    """One warp's words. Times are ns after the warp's own entry; the SM clock
    runs at `ghz` cycles a ns from c0. pairs: [(ready, done)] in ns."""
    cyc = lambda t: c0 + int(round(t * ghz))  # noqa: E731
    w = np.zeros(WORDS, dtype=np.uint64)
    w[8] = cyc(barrier_at) if barrier_at is not None else 0
    w[0], w[1], w[2] = gt0_ns, c0, cyc(x_at)
    w[3] = cyc(loop_at if loop_at is not None else (pairs[-1][1] if pairs else x_at))
    w[4], w[5] = cyc(end_at), gt0_ns + end_at
    w[6] = sm | (len(pairs) << 32)
    w[7] = cyc(issued_at) if issued_at is not None else 0
    for i, (ready, done) in enumerate(pairs[:PAIRS]):
        w[HEAD + 2 * i], w[HEAD + 2 * i + 1] = cyc(ready), cyc(done)
    return w


def record(blocks, grid=(2, 1)):
    data = np.stack([np.stack(ws) for ws in blocks]).astype("<u8").tobytes()
    return {"grid": grid, "warps": len(blocks[0]), "words_per_warp": WORDS,
            "head_words": HEAD, "max_pairs": PAIRS, "data": data}


def two_blocks():
    # Block 0 (2 GHz): warp 0 waits 1000 ns for each stage and computes 500 ns;
    # warp 1 has no pairs. Block 1 (1 GHz) enters 200 ns later, its warp 0
    # finds both stages ready (no wait). Kernel end: block 1 at 200 + 4000 ns.
    # The cluster barrier passes at 3.4 us (from t = 0) in both blocks.
    b0 = [warp_record(10_000, 5_000, 2.0, 300, [(1300, 1800), (2800, 3300)], 3600, sm=3,
                      issued_at=250, barrier_at=3400),
          warp_record(10_000, 5_000, 2.0, 300, [], 3600, sm=3, issued_at=100, barrier_at=3400)]
    b1 = [warp_record(10_200, 90_000, 1.0, 400, [(400, 900), (900, 1400), (1400, 1900),
                                                   (1900, 2400), (2400, 2900)], 4000, sm=7,
                      issued_at=350, barrier_at=3200),
          warp_record(10_200, 90_000, 1.0, 400, [], 4000, sm=7, issued_at=150, barrier_at=3200)]
    return record([b0, b1])


def test_summary_of_known_times():
    s = tq.summarize(two_blocks(), pair_bytes=1000, grid_x=2)
    assert s["span_us"] == pytest.approx(4.2)
    assert s["blocks"] == 2 and s["busy_warps"] == 2 and s["k_parts"] == 2
    # 7 pairs, 5 recorded for block 1's warp (max_pairs 4): one not recorded
    assert s["pairs"] == 7 and s["pairs_not_recorded"] == 1
    assert s["bytes"] == 7000
    assert s["span_gbs"] == pytest.approx(7000 / 4200)
    assert s["start_skew_us"] == pytest.approx(0.2)
    assert s["x_ready_us"]["max"] == pytest.approx(0.6)  # 200 + 400 ns
    # ready times: block 0 1.3, 2.8; block 1 0.6, 1.1, 1.6, 2.1 (us from t = 0)
    assert s["ready_us"]["0"] == pytest.approx(0.6)
    assert s["ready_us"]["100"] == pytest.approx(2.8)
    assert s["ready_curve_us"] == pytest.approx([0.6, 1.1, 1.3, 1.6, 2.1, 2.8])
    # waits: block 0's warp 1.0 + 1.0 us, block 1's none; computing 0.5 us a pair
    assert s["warp_wait_us"]["max"] == pytest.approx(2.0)
    assert s["warp_wait_us"]["median"] == pytest.approx(1.0)
    assert s["warp_compute_us"]["max"] == pytest.approx(2.0)
    assert s["warp_compute_us"]["median"] == pytest.approx(1.5)
    # tails: block 0 3.6 - 3.3 = 0.3 us; block 1 4.0 - (its loop end, the 5th
    # pair's done: 2.9) = 1.1 us
    assert s["tail_us"]["max"] == pytest.approx(1.1)
    assert s["last_pair_done_us"]["max"] == pytest.approx(3.3)  # block 0 (block 1: 0.2 + 2.9)
    assert sorted([s["sm_clock_mhz"]]) == [pytest.approx(1500)]  # median of 2000 and 1000
    # first ring fills issued at 0.25, 0.1, 0.55 (200 + 350 ns), 0.35 us
    assert s["ring_issued_us"]["max"] == pytest.approx(0.55)
    assert s["ring_issued_us"]["median"] == pytest.approx(0.3)
    # the barrier: passed at 3.4 us everywhere; block 0's busy warp waited
    # there 3.4 - 3.3 = 0.1 us, block 1's 3.4 - 3.1 = 0.3; the reduction to a
    # warp's end: block 0 3.6 - 3.4 = 0.2 us, block 1 4.2 - 3.4 = 0.8
    assert s["barrier_passed_us"]["median"] == pytest.approx(3.4)
    assert s["barrier_passed_us"]["max"] == pytest.approx(3.4)
    assert s["barrier_wait_us"]["max"] == pytest.approx(0.3)
    assert s["barrier_wait_us"]["median"] == pytest.approx(0.2)
    assert s["reduction_us"]["max"] == pytest.approx(0.8)
    assert s["reduction_us"]["median"] == pytest.approx(0.5)


def test_records_without_the_issue_point():
    """Records of builds before the issue point (word 7 zero): no such entry."""
    rec = two_blocks()
    words = np.frombuffer(rec["data"], dtype="<u8").copy().reshape(-1, WORDS)
    words[:, 7] = 0
    s = tq.summarize(dict(rec, data=words.tobytes()), pair_bytes=1000, grid_x=2)
    assert s["ring_issued_us"] is None and s["span_us"] == pytest.approx(4.2)


def test_records_without_the_barrier_point():
    """No split (word 8 zero), and records of the 8-word head (builds before
    2026-12-08, pair 0 at word 8): no barrier entries, the pairs as before."""
    rec = two_blocks()
    words = np.frombuffer(rec["data"], dtype="<u8").copy().reshape(-1, WORDS)
    words[:, 8] = 0
    s = tq.summarize(dict(rec, data=words.tobytes()), pair_bytes=1000, grid_x=1)
    assert s["barrier_passed_us"] is None and s["reduction_us"] is None
    assert s["barrier_wait_us"] is None and s["pairs"] == 7
    old = np.delete(np.frombuffer(rec["data"], dtype="<u8").reshape(-1, WORDS), 8, axis=1)
    s8 = tq.summarize(dict(rec, head_words=8, words_per_warp=WORDS - 1,
                           data=old.astype("<u8").tobytes()), pair_bytes=1000, grid_x=2)
    assert s8["barrier_passed_us"] is None
    assert s8["ready_curve_us"] == pytest.approx([0.6, 1.1, 1.3, 1.6, 2.1, 2.8])


def test_missing_or_empty_records_fail_loudly():
    rec = two_blocks()
    short = dict(rec, data=rec["data"][:-8])
    with pytest.raises(RuntimeError, match="no traced launch"):
        tq.summarize(short, pair_bytes=1000, grid_x=2)
    with pytest.raises(RuntimeError, match="no traced launch"):
        tq.summarize(dict(rec, grid=(0, 0), data=b""), pair_bytes=1000, grid_x=2)
    words = np.frombuffer(rec["data"], dtype="<u8").copy()
    words[WORDS * 3] = 0  # block 1, warp 1 never wrote its entry time
    with pytest.raises(RuntimeError, match="left no record"):
        tq.summarize(dict(rec, data=words.tobytes()), pair_bytes=1000, grid_x=2)


def test_blocks_of_fewer_warps():
    """A plan of fewer warps than the record's slots (8-warp blocks) leaves the
    same slots empty in every block: they are not warps, not a failure."""
    rec = two_blocks()
    words = np.frombuffer(rec["data"], dtype="<u8").copy().reshape(2, 2, WORDS)
    wide = np.zeros((2, 3, WORDS), dtype=np.uint64)  # a third, empty warp slot a block
    wide[:, :2] = words
    s = tq.summarize(dict(rec, warps=3, data=wide.astype("<u8").tobytes()), pair_bytes=1000,
                     grid_x=2)
    assert s["pairs"] == 7 and s["span_us"] == pytest.approx(4.2)


def test_parse_cases():
    assert tq.parse_cases(["14336x4096:1,8", "4096x14336:1"]) == [
        (14336, 4096, 1), (14336, 4096, 8), (4096, 14336, 1)]


def test_trace_bindings():
    """On a CUDA build: the traced bulk kernel computes what the plain one does,
    bit for bit, and its record accounts for every (tile, stage) pair, on a
    plan with a cluster split (one SM; its barrier point recorded) and one
    with the ring wrapping around (four SMs); elsewhere the reader raises a clear NotImplementedError."""
    import mlx.core as mx

    import mlx_kernels as mk

    _ext.set_cuda_quantized_matmul_bulk_trace(False)  # the switch exists everywhere
    if not mx.cuda.is_available():
        with pytest.raises(NotImplementedError, match="cuda_quantized_matmul_bulk_trace: .*no CUDA"):
            _ext.cuda_quantized_matmul_bulk_trace()
        return
    rng = np.random.default_rng(5)
    try:
        for sms, (N, K, M) in ((1, (40, 8192, 3)), (4, (1000, 4096, 5))):
            _ext.set_cuda_quantized_matmul_plan_sms(sms)
            _ext.set_cuda_quantized_matmul_kslice_over_bulk_kb_per_sm(0)
            _ext.set_cuda_quantized_matmul_simt_max_kb(0)
            w, s, b = mx.quantize(mx.array(rng.standard_normal((N, K)).astype(np.float32)),
                                  group_size=64, bits=4)
            s, b = s.astype(mx.float16), b.astype(mx.float16)
            x = mx.array(rng.standard_normal((M, K)).astype(np.float16))
            plain = mk.quantized_matmul(x, w, s, b)
            mx.eval(plain)
            _ext.set_cuda_quantized_matmul_bulk_trace(True)
            try:
                traced = mk.quantized_matmul(x, w, s, b)
                mx.eval(traced)
            finally:
                _ext.set_cuda_quantized_matmul_bulk_trace(False)
            rec = _ext.cuda_quantized_matmul_bulk_trace()
            assert mx.array_equal(plain, traced).item(), (sms, N, K, M)
            summary = tq.summarize(rec, pair_bytes=16 * (256 + 2 * 8 * 2), grid_x=rec["grid"][0])
            tiles, stages = -(-N // 16), K // 512
            assert summary["pairs"] == tiles * stages, (sms, summary["pairs"], tiles * stages)
            assert summary["span_us"] > 0 and summary["busy_warps"] >= 1
            # the cluster barrier's time is recorded where K is split, only there
            assert (summary["barrier_passed_us"] is not None) == (rec["grid"][0] > 1), sms
    finally:
        _ext.set_cuda_quantized_matmul_bulk_trace(False)
        _ext.set_cuda_quantized_matmul_plan_sms(0)
        _ext.set_cuda_quantized_matmul_kslice_over_bulk_kb_per_sm(-1)
        _ext.set_cuda_quantized_matmul_simt_max_kb(-1)
