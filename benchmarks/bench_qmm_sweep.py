"""quantized_matmul against M: ours vs mx.quantized_matmul, with the bandwidth floor.

x (M, K) @ dequantize(w).T for w of shape (N, K), 4-bit, group size 64, for
M in {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64} and a few weight shapes (N x K):

* 4096 x 4096    (Llama-3-8B attention projections),
* 14336 x 4096   (Llama-3-8B MLP up/gate),
* 3072 x 1024    (Qwen3-0.6B MLP up/gate),
* 151936 x 1024  (Qwen3-0.6B output projection, the tied embedding: a quarter
  of the model's weight bytes).

Runs on MLX's default device (``--device`` to choose). Dtype: float32 on the
CPU, for both sides: MLX's float16 / bfloat16 CPU path takes ~0.5 s per
4096 x 4096 call (it rounds every partial sum to the half type), which would
make the sweep unmeasurable; float16 on a GPU. Several weight sets (at least
~96 MB in all) are rotated so that the weights come from memory, not from the
last-level cache. The memory-bandwidth floor of a shape is the bytes of w +
scales + biases divided by the copy bandwidth measured in the same run (a
large NumPy copy, bytes read + written per second): no kernel that reads the
weights once can go below it.

    python benchmarks/bench_qmm_sweep.py [--quick] [--device cpu|gpu] [--dtype ...]

Prints a table and writes benchmarks/results/qmm_sweep_<device>.json and .png.
"""

from __future__ import annotations

import argparse
import os
import math

import mlx.core as mx

import mlx_kernels as mk
from _common import (
    RESULTS, copy_bandwidth, machine_info, print_table, progress, time_calls, write_json,
)

M_VALUES = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64]
SHAPES = {
    "4096x4096": (4096, 4096),
    "14336x4096": (14336, 4096),
    "qwen3-0.6b 3072x1024": (3072, 1024),
    "qwen3-0.6b lm_head 151936x1024": (151936, 1024),
}
DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
ROTATE_BYTES = 96 << 20


def weight_sets(N, K, group_size, bits, dtype, device):
    one = N * K * bits // 8 + 2 * N * (K // group_size) * dtype.size
    count = max(2, math.ceil(ROTATE_BYTES / one))
    sets = []
    for _ in range(count):
        w, s, b = mx.quantize(mx.random.normal((N, K), stream=device),
                              group_size=group_size, bits=bits, stream=device)
        sets.append((w, s.astype(dtype), b.astype(dtype)))
    mx.eval(sets)
    return sets


def timer(op, x, sets, group_size, bits, device):
    i = [0]

    def run():
        w, s, b = sets[i[0] % len(sets)]
        i[0] += 1
        mx.eval(op(x, w, s, b, transpose=True, group_size=group_size, bits=bits, stream=device))

    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="M in {1, 4, 16, 64}, shapes 4096x4096 and qwen3 3072x1024")
    ap.add_argument("--device", choices=["cpu", "gpu"], default=None,
                    help="default: MLX's default device")
    ap.add_argument("--dtype", choices=list(DTYPES), default=None,
                    help="default: float32 on the CPU, float16 on a GPU")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=64)
    args = ap.parse_args()

    device = mx.Device(getattr(mx, args.device)) if args.device else mx.default_device()
    dev_name = "gpu" if device.type == mx.gpu else "cpu"
    dname = args.dtype or ("float32" if dev_name == "cpu" else "float16")
    dtype = DTYPES[dname]
    m_values = [1, 4, 16, 64] if args.quick else M_VALUES
    shapes = ({k: v for k, v in SHAPES.items() if k in ("4096x4096", "qwen3-0.6b 3072x1024")}
              if args.quick else SHAPES)
    gs, bits = args.group_size, args.bits

    bandwidth = copy_bandwidth()
    print(f"device {dev_name}, dtype {dname} (both sides), {bits}-bit, group {gs}; "
          f"memory bandwidth (NumPy copy, read + write): {bandwidth / 1e9:.1f} GB/s")
    if dev_name == "cpu" and dname == "float32":
        print("(float32: MLX's float16 CPU quantized_matmul takes ~0.5 s per 4096x4096 call)")

    records, rows = [], []
    cases = [(sname, M) for sname in shapes for M in m_values]
    current = None
    for sname, M in progress(cases, desc="qmm sweep"):
        N, K = shapes[sname]
        if current != sname:
            sets = weight_sets(N, K, gs, bits, dtype, device)
            current = sname
        x = mx.random.normal((M, K), stream=device).astype(dtype)
        mx.eval(x)
        ours = time_calls(timer(mk.quantized_matmul, x, sets, gs, bits, device), min_time=0.5)
        # MLX's CPU path grows ~linearly with M (~15 ms per 4096x4096 row in
        # float32 here): time the slow calls fewer times.
        probe = time_calls(timer(mx.quantized_matmul, x, sets, gs, bits, device),
                           min_time=0.0, min_reps=1, warmup=1)
        theirs = probe if probe > 0.3 else time_calls(
            timer(mx.quantized_matmul, x, sets, gs, bits, device), min_time=0.5, warmup=0)
        w, s, b = sets[0]
        wbytes = w.nbytes + s.nbytes + b.nbytes
        floor = wbytes / bandwidth
        rec = {
            "shape": sname, "N": N, "K": K, "M": M, "bits": bits, "group_size": gs,
            "dtype": dname, "ours_ms": ours * 1e3, "mlx_ms": theirs * 1e3,
            "speedup": theirs / ours, "weight_bytes": wbytes,
            "bandwidth_floor_ms": floor * 1e3, "ours_fraction_of_floor": floor / ours,
        }
        records.append(rec)
        rows.append([sname, M, f"{rec['ours_ms']:.3f}", f"{rec['mlx_ms']:.2f}",
                     f"{rec['speedup']:.1f}x", f"{rec['bandwidth_floor_ms']:.3f}",
                     f"{100 * rec['ours_fraction_of_floor']:.0f}%"])

    print(f"\nquantized_matmul vs M, {dev_name}, {dname}, {bits}-bit, group {gs} "
          f"(floor = weight bytes / copy bandwidth)")
    print_table(["shape NxK", "M", "ours ms", "MLX ms", "speedup", "floor ms", "floor/ours"], rows)
    print("load average (1/5/15 min): %.1f %.1f %.1f (%d cores)" % (*os.getloadavg(), os.cpu_count()))
    name = f"qmm_sweep_{dev_name}"
    path = write_json(f"{name}.json", {
        "benchmark": "quantized_matmul M sweep",
        "method": ("median wall time of mx.eval(op(x, w, ...)) on the stream, weight sets of "
                   f">= {ROTATE_BYTES >> 20} MB rotated; MLX calls over 0.3 s timed once. "
                   "Both sides in the same dtype" + (
                       "; float32 on the CPU because MLX's float16 CPU path takes ~0.5 s "
                       "per 4096x4096 call" if dev_name == "cpu" else "")),
        "machine": machine_info(dev_name),
        # other processes share this machine: the load explains noisy runs
        "load_average_1_5_15_min_at_end": list(os.getloadavg()),
        "copy_bandwidth_GBps": bandwidth / 1e9,
        "results": records,
    })
    print(f"\nwrote {path}")
    plot(records, shapes, dev_name, dname, bits, gs, RESULTS / f"{name}.png")


def plot(records, shapes, dev_name, dname, bits, gs, out):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    cols = min(len(shapes), 2)
    rows_ = (len(shapes) + cols - 1) // cols
    fig, axes = plt.subplots(rows_, cols, figsize=(5.2 * cols, 4.0 * rows_), squeeze=False)
    for ax in axes.flat[len(shapes):]:
        ax.set_visible(False)
    for ax, sname in zip(axes.flat, shapes):
        rs = [r for r in records if r["shape"] == sname]
        ms = [r["M"] for r in rs]
        ax.plot(ms, [r["ours_ms"] for r in rs], "-o", label="mlx_kernels")
        ax.plot(ms, [r["mlx_ms"] for r in rs], "--x", label="mx.quantized_matmul")
        ax.axhline(rs[0]["bandwidth_floor_ms"], color="gray", ls=":",
                   label="bandwidth floor (weights once)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(ms)
        ax.set_xticklabels([str(m) for m in ms], fontsize=7)
        ax.set_xlabel("M (rows of x)")
        ax.set_ylabel("ms per call")
        ax.set_title(f"N x K = {sname}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{bits}-bit quantized_matmul, group {gs}, {dname}, {dev_name}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
