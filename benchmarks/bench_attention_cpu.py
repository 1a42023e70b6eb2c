"""mlx_kernels.flash_attention vs mx.fast.scaled_dot_product_attention on the CPU.

Cases: B = 1, 8 heads (no GQA), D = 128, float32 and float16; prefill
(qL = kL, no mask and causal) and decode (qL = 1) at kL in {256, 1024, 4096}.
Then the peak memory of one call at qL = kL = 8192 (float32, no mask), ours
and MLX's, each in a fresh subprocess: ru_maxrss after the call minus
ru_maxrss after allocating and evaluating the inputs (with MLX's buffer cache
cleared and, on Linux, the high-water mark reset to the current RSS, so that
the temporaries of generating the inputs do not hide the call's own peak;
the children run with a fixed glibc mmap threshold for the same reason).

Prints a table and writes benchmarks/results/attention_cpu.json.

    python benchmarks/bench_attention_cpu.py [--quick] [--skip-memory]
"""

import argparse
import json
import os
import resource
import subprocess
import sys

import mlx.core as mx
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _attn_common import machine_info, now_utc, time_ms, versions  # noqa: E402
from _common import progress  # noqa: E402

import mlx_kernels as mk  # noqa: E402

HEADS, D = 8, 128
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "attention_cpu.json")
MEM_L = 8192


def inputs(qL, kL, dtype, seed=0):
    mx.random.seed(seed)
    q = mx.random.normal((1, HEADS, qL, D)).astype(dtype)
    k = mx.random.normal((1, HEADS, kL, D)).astype(dtype)
    v = mx.random.normal((1, HEADS, kL, D)).astype(dtype)
    mx.eval(q, k, v)
    return q, k, v


def run_case(kind, kL, dtype):
    qL = 1 if kind == "decode" else kL
    mask = "causal" if kind == "prefill-causal" else None
    q, k, v = inputs(qL, kL, dtype)
    scale = D ** -0.5
    ours = lambda: mk.flash_attention(q, k, v, scale=scale, mask=mask, stream=mx.cpu)
    theirs = lambda: mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask, stream=mx.cpu)
    a, b = ours(), theirs()
    a32, b32 = np.array(a.astype(mx.float32)), np.array(b.astype(mx.float32))
    err = float(np.linalg.norm(a32 - b32) / np.linalg.norm(b32))
    t_ours, med_ours, n_ours = time_ms(ours)
    t_mlx, med_mlx, n_mlx = time_ms(theirs)
    return {
        "case": kind,
        "dtype": str(dtype).split(".")[-1],
        "B": 1,
        "heads": HEADS,
        "D": D,
        "qL": qL,
        "kL": kL,
        "ours_ms": round(t_ours, 4),
        "mlx_ms": round(t_mlx, 4),
        "speedup": round(t_mlx / t_ours, 3),
        "ours_median_ms": round(med_ours, 4),
        "mlx_median_ms": round(med_mlx, 4),
        "reps_ours": n_ours,
        "reps_mlx": n_mlx,
        "rel_diff_vs_mlx": err,
    }


# --- Peak memory, one fresh process per implementation ------------------------
def memory_child(which):
    q, k, v = inputs(MEM_L, MEM_L, mx.float32)
    # Drop MLX's buffer cache (the temporaries of the random inputs), so that
    # the call's own allocations show in the RSS and are not served from it.
    mx.clear_cache()
    mx.reset_peak_memory()
    # ru_maxrss is a high-water mark: generating the inputs may have pushed it
    # above what the inputs themselves hold. Linux resets it to the current
    # RSS on "5" written to /proc/self/clear_refs; then the baseline is the
    # memory held with the inputs allocated.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        hwm_reset = True
    except OSError:
        hwm_reset = False
    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = D ** -0.5
    if which == "ours":
        out = mk.flash_attention(q, k, v, scale=scale, stream=mx.cpu)
    else:
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, stream=mx.cpu)
    mx.eval(out)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "which": which,
        "rss_baseline_bytes": base_kb * 1024,
        "rss_peak_bytes": peak_kb * 1024,
        "rss_increase_bytes": (peak_kb - base_kb) * 1024,
        "mlx_allocator_peak_bytes": mx.get_peak_memory(),
        "high_water_mark_reset_before_baseline": hwm_reset,
    }))


# glibc raises its mmap threshold after large frees, and then keeps freed
# blocks (the temporaries of generating the inputs) resident, where later
# allocations reuse them without the RSS growing. A fixed threshold sends
# every large block through mmap/munmap, so the RSS follows what is live.
CHILD_ENV = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")


def measure_memory():
    out = {}
    for which in ("ours", "mlx"):
        r = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--memory-child", which],
            capture_output=True, text=True, check=True, env=CHILD_ENV,
        )
        out[which] = json.loads(r.stdout.strip().splitlines()[-1])
    score_bytes = HEADS * MEM_L * MEM_L * 4
    io_bytes = 4 * HEADS * MEM_L * D * 4  # q, k, v, out
    return {
        "B": 1, "heads": HEADS, "D": D, "qL": MEM_L, "kL": MEM_L, "dtype": "float32", "mask": None,
        "child_env": {"MALLOC_MMAP_THRESHOLD_": CHILD_ENV["MALLOC_MMAP_THRESHOLD_"]},
        "score_matrix_bytes": score_bytes,
        "qkv_out_bytes": io_bytes,
        **out,
    }


def gib(x):
    return x / 2**30


def report_memory():
    mem = measure_memory()
    print(f"\nPeak memory, qL = kL = {MEM_L}, B = 1, {HEADS} heads, D = {D}, float32, no mask")
    print(f"  {HEADS} qL x kL float32 score matrices (one per head): {gib(mem['score_matrix_bytes']):.2f} GiB;"
          f" q, k, v and out: {gib(mem['qkv_out_bytes']):.3f} GiB")
    for which in ("ours", "mlx"):
        m = mem[which]
        print(f"  {which:5} RSS increase {gib(m['rss_increase_bytes']):8.3f} GiB   "
              f"MLX allocator peak (incl. inputs) {gib(m['mlx_allocator_peak_bytes']):8.3f} GiB")
    return mem


def plot(result, path):
    """Ours vs MLX per case (log time), one panel per dtype."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    rows = result["results"]
    dtypes = sorted({r["dtype"] for r in rows})
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6 * len(dtypes), 4.2), squeeze=False)
    for ax, dtype in zip(axes[0], dtypes):
        sel = [r for r in rows if r["dtype"] == dtype]
        labels = [f"{r['case']}\nkL={r['kL']}" for r in sel]
        xs = range(len(sel))
        ax.bar([x - 0.2 for x in xs], [r["ours_ms"] for r in sel], 0.4, label="mlx_kernels")
        ax.bar([x + 0.2 for x in xs], [r["mlx_ms"] for r in sel], 0.4, label="MLX sdpa")
        for x, r in zip(xs, sel):
            ax.text(x, r["mlx_ms"], f"{r['speedup']:.0f}x", ha="center", va="bottom", fontsize=7)
        ax.set_yscale("log")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, fontsize=6, rotation=45, ha="right")
        ax.set_ylabel("time per call (ms)")
        ax.set_title(f"attention on the CPU, {dtype}, B=1, {HEADS} heads, D={D}")
        ax.legend(fontsize=7)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="kL in {256, 1024} only")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--memory-only", action="store_true",
                    help="only measure peak memory; update it in the existing JSON")
    ap.add_argument("--memory-child", choices=["ours", "mlx"])
    ap.add_argument("--out", default=RESULTS)
    ap.add_argument("--plot-only", action="store_true", help="redraw the PNG from the JSON")
    args = ap.parse_args()
    png = os.path.splitext(args.out)[0] + ".png"
    if args.plot_only:
        with open(args.out) as f:
            plot(json.load(f), png)
        return
    if args.memory_child:
        memory_child(args.memory_child)
        return

    if args.memory_only:
        with open(args.out) as f:
            result = json.load(f)
        result["peak_memory"] = report_memory()
        result["peak_memory"]["date"] = now_utc()
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
        print(f"\nupdated {args.out}")
        return

    lengths = [256, 1024] if args.quick else [256, 1024, 4096]
    rows = []
    print(f"{'case':15} {'dtype':8} {'qL':>5} {'kL':>5} {'ours ms':>10} {'MLX ms':>10} {'MLX/ours':>9}")
    cases = [(d, kind, kL) for d in (mx.float32, mx.float16)
             for kind in ("prefill", "prefill-causal", "decode") for kL in lengths]
    for dtype, kind, kL in progress(cases, desc="attention cpu"):
        r = run_case(kind, kL, dtype)
        rows.append(r)
        print(f"{r['case']:15} {r['dtype']:8} {r['qL']:5} {r['kL']:5} "
              f"{r['ours_ms']:10.3f} {r['mlx_ms']:10.3f} {r['speedup']:8.2f}x", flush=True)

    result = {
        "benchmark": "attention_cpu",
        "date": now_utc(),
        "machine": machine_info(),
        "versions": versions(),
        "threads": os.environ.get("MLX_KERNELS_NUM_THREADS", "all usable cores"),
        "timing": "best wall time of mx.eval(op(...)) after one warm-up, at least 5 calls "
                  "and 1 s (medians alongside); calls over 2 s are timed once",
        "load_average_at_start": os.getloadavg(),
        "results": rows,
    }
    if not args.skip_memory:
        result["peak_memory"] = report_memory()
    elif os.path.exists(args.out):
        # Keep the memory figures of the last full run (they carry their date).
        with open(args.out) as f:
            old = json.load(f)
        if "peak_memory" in old:
            result["peak_memory"] = old["peak_memory"]
            result["peak_memory"].setdefault("date", old.get("date"))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"\nwrote {args.out}")
    plot(result, png)


if __name__ == "__main__":
    main()
