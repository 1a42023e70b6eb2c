"""quantized_matmul on the CPU: ours against mx.quantized_matmul, same run.

4-bit (and 8-bit), group size 64, N = K = 4096, M in {1, 4, 16, 64}, float32,
float16 and bfloat16. Several weight sets are rotated so that the weights come
from memory, not from the last-level cache. The memory-bandwidth ceiling is a
large NumPy copy measured in the same run (bytes read + written per second).

    python benchmarks/bench_qmm_cpu.py [--quick]

Writes benchmarks/results/qmm_cpu.json and qmm_cpu.png.
"""

from __future__ import annotations

import argparse

import mlx.core as mx

import mlx_kernels as mk
from _common import (
    RESULTS, copy_bandwidth, machine_info, print_table, progress, time_calls, write_json,
)

DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


def weight_sets(N, K, group_size, bits, dtype, count):
    sets = []
    for _ in range(count):
        w, s, b = mx.quantize(mx.random.normal((N, K)), group_size=group_size, bits=bits)
        sets.append((w, s.astype(dtype), b.astype(dtype)))
    mx.eval(sets)
    return sets


def bench_case(op, x, sets, group_size, bits, ops_per_eval):
    """One call evaluates `ops_per_eval` products, each with the next weight set
    (MLX's per-eval host overhead is then shared; the weights come from memory)."""
    i = [0]

    def run():
        outs = []
        for _ in range(ops_per_eval):
            w, s, b = sets[i[0] % len(sets)]
            i[0] += 1
            outs.append(op(x, w, s, b, group_size=group_size, bits=bits, stream=mx.cpu))
        mx.eval(outs)

    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="M in {1, 4} and float32/float16 only")
    ap.add_argument("--bits", type=int, nargs="+", default=[4])
    args = ap.parse_args()

    N = K = 4096
    group_size = 64
    m_values = [1, 4] if args.quick else [1, 4, 16, 64]
    dtypes = ["float32", "float16"] if args.quick else list(DTYPES)
    bandwidth = copy_bandwidth()
    print(f"memory bandwidth (NumPy copy, read + write): {bandwidth / 1e9:.1f} GB/s")

    rows, records = [], []
    cases = [(bits, d, M) for bits in args.bits for d in dtypes for M in m_values]
    cache = {}
    for bits, dname, M in progress(cases, desc="qmm cpu"):
        dtype = DTYPES[dname]
        if (bits, dname) not in cache:
            cache.clear()
            cache[(bits, dname)] = weight_sets(N, K, group_size, bits, dtype, count=4)
        sets = cache[(bits, dname)]
        x = mx.random.normal((M, K)).astype(dtype)
        mx.eval(x)
        per_eval = 4
        ours = time_calls(
            bench_case(mk.quantized_matmul, x, sets, group_size, bits, per_eval), min_time=1.0
        ) / per_eval
        # MLX's own float16/bfloat16 CPU path takes seconds per call: time it once.
        slow = dtype != mx.float32
        theirs = time_calls(
            bench_case(mx.quantized_matmul, x, sets, group_size, bits, 1 if slow else per_eval),
            min_time=0.0 if slow else 1.0, min_reps=1 if slow else 3, warmup=0 if slow else 1,
        ) / (1 if slow else per_eval)
        w, s, b = sets[0]
        moved = w.nbytes + s.nbytes + b.nbytes + x.nbytes + M * N * x.itemsize
        rec = {
            "N": N, "K": K, "M": M, "bits": bits, "group_size": group_size, "dtype": dname,
            "ours_ms": ours * 1e3, "mlx_ms": theirs * 1e3, "speedup": theirs / ours,
            "bytes_moved": moved, "ours_GBps": moved / ours / 1e9,
            "fraction_of_copy_bandwidth": moved / ours / bandwidth,
            "ours_GFLOPs": 2 * M * N * K / ours / 1e9,
        }
        records.append(rec)
        rows.append([
            bits, dname, M, f"{rec['ours_ms']:.3f}", f"{rec['mlx_ms']:.1f}",
            f"{rec['speedup']:.0f}x", f"{rec['ours_GBps']:.1f}",
            f"{100 * rec['fraction_of_copy_bandwidth']:.0f}%", f"{rec['ours_GFLOPs']:.1f}",
        ])

    print(f"\nquantized_matmul, CPU, N = K = {N}, group size {group_size}")
    print_table(
        ["bits", "dtype", "M", "ours ms", "MLX ms", "speedup", "ours GB/s", "of copy BW", "GFLOP/s"],
        rows,
    )
    path = write_json("qmm_cpu.json", {
        "benchmark": "quantized_matmul cpu",
        "method": "median wall time of one mx.eval of 4 products on the CPU stream, each "
                  "with the next of 4 weight sets (37 MB in all, over the 32 MB L3), "
                  "divided by 4; MLX float16/bfloat16: one product timed once per case "
                  "(seconds per call)",
        "machine": machine_info("cpu"),
        "copy_bandwidth_GBps": bandwidth / 1e9,
        "results": records,
    })
    print(f"\nwrote {path}")
    plot(records, bandwidth)


def plot(records, bandwidth):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for dname in DTYPES:
        for who, key, style in (("ours", "ours_ms", "-o"), ("MLX", "mlx_ms", "--x")):
            pts = [(r["M"], r[key]) for r in records if r["dtype"] == dname and r["bits"] == 4]
            if pts:
                ax.plot(*zip(*pts), style, label=f"{who} {dname}")
    floor = [(r["M"], r["bytes_moved"] / bandwidth * 1e3) for r in records
             if r["dtype"] == "float16" and r["bits"] == 4]
    if floor:
        ax.plot(*zip(*floor), ":", color="gray", label="memory-bandwidth floor (f16)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("M (rows of x)")
    ax.set_ylabel("time per call (ms)")
    ax.set_title("4-bit quantized_matmul on the CPU, N = K = 4096, group 64")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = RESULTS / "qmm_cpu.png"
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
