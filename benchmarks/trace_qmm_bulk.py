"""Where the CUDA bulk quantized_matmul kernel's time goes, warp by warp.

The kernel's trace variant (`kBulkTrace` in csrc/cuda/quantized_matmul.cu,
switched on by `_ext.set_cuda_quantized_matmul_bulk_trace`) has lane 0 of
every warp write the SM clock when the warp starts, when the block has staged
x, when each of its (tile, stage) pairs is ready (its mbarrier wait returns)
and when that pair's math is done, when its last pair is done and when it
leaves (after the cluster's split-K reduction), plus the global timer at entry
and exit. Float16 x and 4-bit weights only (the variant exists for those).

One launch per case, weights cold: a 512 MB buffer is read first so that no
weight byte is in L2 (session 28's first run wrote it instead, which left L2
full of dirty lines: its spans were 6-14% above the ncu times of the same
kernels in that call). The traced output is checked against the untraced
one (the variant must compute the same thing). Per case it prints:
- the kernel span (first warp in to last warp out) and its bandwidth, with
  the copy bandwidth measured in the same process;
- the blocks' start skew, when the warps' first ring fills were issued and
  when x was staged (median and max from t = 0);
- the pairs' ready times (10 / 50 / 90 / 100% of the weight bytes), and the
  bandwidth the pairs were consumed at between 10% and 90%;
- per warp: time spent waiting for a stage (ready - previous done) against
  time computing (done - ready), and the tail after its last pair (the
  reduction and the wait for the other blocks of the cluster), split where K
  is split into the wait at the cluster barrier and the reduction after it.

    python benchmarks/trace_qmm_bulk.py [--cases 14336x4096:1,8 4096x14336:1] [--out DIR]

Writes qmm_bulk_trace.json (and qmm_bulk_trace.png, ready-time curves) to DIR
(default benchmarks/results). `summarize` is plain NumPy (tested on the CPU
with synthetic records, tests/test_trace_qmm_bulk.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

GS, BITS = 64, 4
DEFAULT_CASES = ["14336x4096:1,8", "4096x14336:1", "128256x4096:1"]
# words of a warp's record (the kernel's kTraceHead layout)
W_GT0, W_C0, W_CX, W_CLOOP, W_CEND, W_GT1, W_SM, W_CISSUE, W_CBAR = 0, 1, 2, 3, 4, 5, 6, 7, 8


def parse_cases(specs):
    cases = []
    for spec in specs:
        shape, ms = spec.split(":")
        n, k = (int(v) for v in shape.split("x"))
        cases += [(n, k, int(m)) for m in ms.split(",")]
    return cases


def records(rec):
    """The trace as an array [blocks, warps, words] (uint64), blocks in
    (y, x) order as the kernel writes them."""
    gx, gy = rec["grid"]
    words = np.frombuffer(rec["data"], dtype="<u8")
    expect = gx * gy * rec["warps"] * rec["words_per_warp"]
    if gx * gy == 0 or words.size != expect:
        raise RuntimeError(f"no traced launch in the record (grid {gx}x{gy}, {words.size} words)")
    return words.reshape(gx * gy, rec["warps"], rec["words_per_warp"]).astype(np.int64)


def pct(values, q):
    return float(np.percentile(values, q)) if len(values) else float("nan")


def stats(values):
    return {"median": pct(values, 50), "max": max(values)} if values else None


def summarize(rec, pair_bytes, grid_x):
    """Times in microseconds from the first warp's entry (t = 0).

    rec: the dict of _ext.cuda_quantized_matmul_bulk_trace(); pair_bytes: the
    bytes of weights, scales and biases a (tile, stage) pair brings; grid_x:
    the k parts (a cluster's blocks). A block's SM clock is turned into time
    by its warps' global-timer span (the global timer gives t = 0 and lines
    the SMs up)."""
    r = records(rec)
    head, max_pairs = rec["head_words"], rec["max_pairs"]
    # a block of 8 warps leaves the record's last 8 warp slots empty in every
    # block; a warp slot empty in some blocks only means a block did not run
    present = r[:, :, W_GT0] != 0
    launched = present.any(axis=0)
    if not launched.any() or not present[:, launched].all():
        raise RuntimeError("a warp left no record: the trace variant did not run for every block")
    r = r[:, launched, :]
    gt0 = r[:, :, W_GT0]
    t_zero = gt0.min()
    # ns per SM cycle, per block: the block's longest-lived warp (the most cycles)
    cycles = r[:, :, W_CEND] - r[:, :, W_C0]
    span_ns = r[:, :, W_GT1] - gt0
    ref = cycles.argmax(axis=1)
    idx = np.arange(r.shape[0])
    ns_per_cycle = span_ns[idx, ref] / np.maximum(cycles[idx, ref], 1)

    def at(word_cycles, b, w):
        return (gt0[b, w] - t_zero + (word_cycles - r[b, w, W_C0]) * ns_per_cycle[b]) / 1e3

    starts, x_ready, ends, loop_ends, tails, issued = [], [], [], [], [], []
    # the cluster barrier before the split-K reduction (word 8: records with a
    # head of 9 words, since 2026-12-08; 0 where K is not split)
    has_barrier = head > W_CBAR
    barrier_passed, barrier_waits, reductions = [], [], []
    ready, waits, computes, pairs_total, truncated = [], [], [], 0, 0
    busy_warps = 0
    for b in range(r.shape[0]):
        for w in range(r.shape[1]):
            rw = r[b, w]
            pairs = int(rw[W_SM] >> 32)
            starts.append((gt0[b, w] - t_zero) / 1e3)
            x_ready.append(at(rw[W_CX], b, w))
            if rw[W_CISSUE]:  # 0 in records of builds before 2026-12-08
                issued.append(at(rw[W_CISSUE], b, w))
            ends.append(at(rw[W_CEND], b, w))
            if has_barrier and rw[W_CBAR]:
                barrier_passed.append(at(rw[W_CBAR], b, w))
                reductions.append(at(rw[W_CEND], b, w) - barrier_passed[-1])
                if pairs:
                    barrier_waits.append(barrier_passed[-1] - at(rw[W_CLOOP], b, w))
            if pairs == 0:
                continue
            busy_warps += 1
            loop_ends.append(at(rw[W_CLOOP], b, w))
            tails.append(at(rw[W_CEND], b, w) - at(rw[W_CLOOP], b, w))
            pairs_total += pairs
            seen = min(pairs, max_pairs)
            truncated += pairs - seen
            prev_done = at(rw[W_CX], b, w)
            wait = comp = 0.0
            for i in range(seen):
                t_ready = at(rw[head + 2 * i], b, w)
                t_done = at(rw[head + 2 * i + 1], b, w)
                ready.append(t_ready)
                wait += max(t_ready - prev_done, 0.0)
                comp += t_done - t_ready
                prev_done = t_done
            waits.append(wait)
            computes.append(comp)
    ready = np.sort(np.array(ready))
    span = max(ends)
    total_bytes = pairs_total * pair_bytes
    n = len(ready)
    t10, t90 = (ready[int(0.1 * (n - 1))], ready[int(0.9 * (n - 1))]) if n else (0.0, 0.0)
    window_gbs = (0.8 * n * pair_bytes) / ((t90 - t10) * 1e3) if t90 > t10 else float("nan")
    return {
        "span_us": span,
        "bytes": int(total_bytes),
        "span_gbs": total_bytes / (span * 1e3) if span > 0 else float("nan"),
        "sm_clock_mhz": float(np.median(1e3 / ns_per_cycle)),
        "blocks": int(r.shape[0]),
        "k_parts": int(grid_x),
        "busy_warps": busy_warps,
        "pairs": pairs_total,
        "pairs_not_recorded": truncated,
        "start_skew_us": max(starts),
        "x_ready_us": {"median": pct(x_ready, 50), "max": max(x_ready)},
        # when lane 0 had issued the warp's first ring fill (before x is staged)
        "ring_issued_us": stats(issued),
        "ready_us": {str(q): pct(ready, q) for q in (0, 10, 50, 90, 100)},
        "ready_10_90_gbs": window_gbs,
        "warp_wait_us": {"median": pct(waits, 50), "max": max(waits) if waits else 0.0},
        "warp_compute_us": {"median": pct(computes, 50), "max": max(computes) if computes else 0.0},
        "last_pair_done_us": {"median": pct(loop_ends, 50), "max": max(loop_ends)},
        "tail_us": {"median": pct(tails, 50), "max": max(tails)},
        # the tail in two: a busy warp's last pair done -> the cluster barrier
        # passed, and the barrier -> the warp's end (the reduction and, by
        # default, the second barrier); None without a split or in older records
        "barrier_passed_us": stats(barrier_passed),
        "barrier_wait_us": stats(barrier_waits),
        "reduction_us": stats(reductions),
        # ~200 points of the sorted ready times, the last one always in
        "ready_curve_us": [float(v) for v in np.append(ready[: n - 1: max(1, n // 200)],
                                                        ready[-1:])],
    }


def run(args):
    import mlx.core as mx

    import mlx_kernels as mk
    from _common import RESULTS, machine_info
    from bench_qmm_gpu import copy_bandwidth_mlx, copy_bandwidth_torch
    from mlx_kernels import _ext
    from ncu_qmm_gpu import PLAN_FIELDS, device_plan

    mx.set_default_device(mx.gpu)
    # a 2 GiB device copy (bytes read + written), as ncu_qmm_gpu.py measures it
    copy_gbs = (copy_bandwidth_torch() or copy_bandwidth_mlx()) / 1e9
    flush = mx.zeros((128 << 20,), dtype=mx.float32)  # 512 MB
    results = []
    for n, k, m in parse_cases(args.cases):
        w, s, b = mx.quantize(mx.random.normal((n, k)), group_size=GS, bits=BITS)
        s, b = s.astype(mx.float16), b.astype(mx.float16)
        x = mx.random.normal((m, k)).astype(mx.float16)
        mx.eval(w, s, b, x)
        plan = device_plan(m, n, k, "float16")
        if plan["kernel"] != "tensor_core_bulk":
            print(f"{n}x{k} M={m}: the plan takes {plan['kernel']}, not the bulk kernel; skipped")
            continue
        plain = mk.quantized_matmul(x, w, s, b)
        mx.eval(plain)
        # every weight byte out of L2 by reading 512 MB (a write would leave L2
        # full of dirty lines, written back while the kernel reads)
        mx.eval(mx.sum(flush))
        _ext.set_cuda_quantized_matmul_bulk_trace(True)
        try:
            traced = mk.quantized_matmul(x, w, s, b)
            mx.eval(traced)
            mx.synchronize()
        finally:
            _ext.set_cuda_quantized_matmul_bulk_trace(False)
        rec = _ext.cuda_quantized_matmul_bulk_trace()
        same = bool(mx.array_equal(plain, traced).item())
        pair_bytes = 16 * (plan["row_bytes"] + 2 * (plan["k_step"] // GS) * 2)
        summ = summarize(rec, pair_bytes, plan["split_k"])
        summ.update(N=n, K=k, M=m, plan={f: plan.get(f) for f in PLAN_FIELDS},
                    traced_equals_plain=same, copy_gbs=copy_gbs)
        results.append(summ)
        print(f"{n}x{k} M={m} plan split {plan['split_k']} grid {plan['grid']} "
              f"tiles/block {plan['tiles_per_block']} ring {plan['ring']}: "
              f"traced output == plain: {same}")
        print(f"  span {summ['span_us']:.2f} us ({summ['span_gbs']:.0f} GB/s, "
              f"{summ['span_gbs'] / copy_gbs:.0%} of copy {copy_gbs:.0f}); "
              f"SM clock {summ['sm_clock_mhz']:.0f} MHz; start skew {summ['start_skew_us']:.2f}")
        iss = summ["ring_issued_us"] or {"median": float("nan"), "max": float("nan")}
        print(f"  first ring fill issued: median {iss['median']:.2f}, max {iss['max']:.2f} us; "
              f"x staged: median {summ['x_ready_us']['median']:.2f}, max "
              f"{summ['x_ready_us']['max']:.2f} us")
        rq = summ["ready_us"]
        print(f"  pairs ready at 0/10/50/90/100%: {rq['0']:.2f} / {rq['10']:.2f} / {rq['50']:.2f} / "
              f"{rq['90']:.2f} / {rq['100']:.2f} us; 10-90% at {summ['ready_10_90_gbs']:.0f} GB/s")
        print(f"  a warp: waiting {summ['warp_wait_us']['median']:.2f} (max "
              f"{summ['warp_wait_us']['max']:.2f}), computing {summ['warp_compute_us']['median']:.2f} "
              f"(max {summ['warp_compute_us']['max']:.2f}) us; last pair done median "
              f"{summ['last_pair_done_us']['median']:.2f}, max {summ['last_pair_done_us']['max']:.2f}; "
              f"tail median {summ['tail_us']['median']:.2f}, max {summ['tail_us']['max']:.2f} us")
        if summ["barrier_passed_us"]:
            bp, bw, rd = summ["barrier_passed_us"], summ["barrier_wait_us"], summ["reduction_us"]
            print(f"  cluster barrier passed: median {bp['median']:.2f}, max {bp['max']:.2f} us; "
                  f"a warp's wait there (after its last pair) median {bw['median']:.2f}, max "
                  f"{bw['max']:.2f}; reduction to its end median {rd['median']:.2f}, max "
                  f"{rd['max']:.2f} us")
        if not same:
            print("  WARNING: the traced kernel's output differs from the plain one")
    payload = {
        "method": ("the bulk kernel's trace variant (SM clock per warp event, global timer at "
                   "entry and exit), one launch per case after a 512 MB read (weights cold); "
                   "times from the first warp's entry"),
        "machine": machine_info("gpu"),
        "results": results,
    }
    out_dir = Path(args.out) if args.out else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{args.tag}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")
    _plot(results, out_dir / f"{args.tag}.png")


def _plot(results, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        curve = r["ready_curve_us"]
        ax.plot(curve, np.linspace(0, 1, len(curve)), label=f"{r['N']}x{r['K']} M={r['M']}")
        ax.axvline(r["span_us"], ls=":", lw=0.8)
    ax.set_xlabel("us from the first warp's entry")
    ax.set_ylabel("share of (tile, stage) pairs ready")
    ax.set_title("bulk quantized_matmul: when the stages were ready (dotted: kernel end)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="*", default=DEFAULT_CASES)
    ap.add_argument("--out", default=None, help="folder (default benchmarks/results)")
    ap.add_argument("--tag", default="qmm_bulk_trace")
    run(ap.parse_args())


if __name__ == "__main__":
    main()
