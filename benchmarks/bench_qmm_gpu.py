"""quantized_matmul on the GPU (CUDA): ours against mx.quantized_matmul, same run.

4-bit, group size 64, transpose=True, float16 and bfloat16; Llama-3-8B and
Qwen3-0.6B layer shapes; M in {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64}.

Method: OPS calls per mx.eval, cycling through enough weight sets that the
sets together exceed the 60 MB L2 several times (so weights come from HBM);
the time of one op is the median over repetitions of (eval time / OPS). Host
overhead inside a batch (~7 us an op, mlx-extension-facts.md) puts a floor
under small shapes for both implementations. The memory ceiling is a
device-to-device copy measured in the same run (bytes read + written).

    python benchmarks/bench_qmm_gpu.py [--quick] [--out DIR]

Writes qmm_h200.json and qmm_h200_<family>.png to DIR (default
benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import mlx.core as mx

import mlx_kernels as mk
from _common import RESULTS, machine_info, print_table

FAMILIES = {
    "llama3-8b": [(4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336), (128256, 4096)],
    "qwen3-0.6b": [(1024, 1024), (2048, 1024), (1024, 2048), (3072, 1024), (1024, 3072),
                   (151936, 1024)],
}
M_VALUES = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64]
DTYPES = {"float16": mx.float16, "bfloat16": mx.bfloat16}
OPS = 32
L2_BYTES = 60e6


def copy_bandwidth_mlx(nbytes=2 << 30, reps=10):
    a = mx.random.randint(0, 255, (nbytes // 4,), dtype=mx.uint32)
    mx.eval(a)
    times = []
    for _ in range(reps + 2):
        mx.synchronize()
        t0 = time.perf_counter()
        b = mx.abs(a)  # reads and writes every byte once (uint32 abs: a copy)
        mx.eval(b)
        mx.synchronize()
        times.append(time.perf_counter() - t0)
        del b
    return 2 * nbytes / statistics.median(times[2:])


def copy_bandwidth_torch(nbytes=2 << 30, reps=20):
    try:
        import torch
    except Exception:  # noqa: BLE001
        return None
    if not torch.cuda.is_available():
        return None
    a = torch.empty(nbytes, dtype=torch.uint8, device="cuda").random_(0, 255)
    b = torch.empty_like(a)
    b.copy_(a)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        b.copy_(a)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del a, b
    torch.cuda.empty_cache()
    return 2 * nbytes / statistics.median(times)


def weight_sets(N, K, dtype, count, group_size=64, bits=4):
    sets = []
    for _ in range(count):
        w, s, b = mx.quantize(mx.random.normal((N, K)), group_size=group_size, bits=bits)
        sets.append((w, s.astype(dtype), b.astype(dtype)))
        mx.eval(sets[-1])
    return sets


def weight_bytes(N, K, dtype, group_size=64, bits=4):
    return N * K * bits // 8 + 2 * N * (K // group_size) * (2 if dtype != mx.float32 else 4)


def time_op(fn, x, sets, reps):
    def batch():
        outs = [fn(x, *sets[i % len(sets)]) for i in range(OPS)]
        mx.eval(outs)

    batch()
    mx.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        batch()
        mx.synchronize()
        times.append((time.perf_counter() - t0) / OPS)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--ops", type=int, default=OPS, help="ops per mx.eval")
    ap.add_argument("--dtypes", default="float16,bfloat16")
    ap.add_argument("--tag", default="", help="suffix of the output file names")
    ap.add_argument("--mvalues", default="", help="comma-separated M values (default: all)")
    ap.add_argument("--shapes", default="", help="comma-separated NxK (default: all)")
    args = ap.parse_args()
    globals()["OPS"] = args.ops
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    mx.set_default_device(mx.gpu)

    bw_torch = copy_bandwidth_torch()
    bw_mlx = copy_bandwidth_mlx()
    bw = bw_torch or bw_mlx
    torch_txt = f"{bw_torch / 1e12:.3f} TB/s" if bw_torch else "n/a"
    print(f"copy bandwidth (read + write): torch {torch_txt}, "
          f"mlx abs(uint32) {bw_mlx / 1e12:.3f} TB/s", flush=True)

    gs, bits = 64, 4
    ours = lambda x, w, s, b: mk.quantized_matmul(x, w, s, b, transpose=True, group_size=gs, bits=bits)  # noqa: E731
    theirs = lambda x, w, s, b: mx.quantized_matmul(x, w, s, b, transpose=True, group_size=gs, bits=bits)  # noqa: E731

    families = FAMILIES
    m_values = M_VALUES
    dtypes = {k: v for k, v in DTYPES.items() if k in args.dtypes.split(",")}
    if args.mvalues:
        m_values = [int(v) for v in args.mvalues.split(",")]
    if args.shapes:
        keep = {tuple(int(d) for d in v.split("x")) for v in args.shapes.split(",")}
        families = {f: [sh for sh in shs if sh in keep] for f, shs in families.items()}
        families = {f: shs for f, shs in families.items() if shs}
    if args.quick:
        families = {"llama3-8b": [(4096, 4096), (14336, 4096)]}
        m_values = [1, 4, 16]
        dtypes = {"float16": mx.float16}

    results = []
    for fam, shapes in families.items():
        for (N, K) in shapes:
            for dname, dtype in dtypes.items():
                wb = weight_bytes(N, K, dtype)
                count = int(min(256, max(2, math.ceil(4 * L2_BYTES / wb))))
                sets = weight_sets(N, K, dtype, count)
                for M in m_values:
                    x = mx.random.normal((M, K)).astype(dtype)
                    mx.eval(x)
                    # parity spot check on the first set, against a float32
                    # dequantize + matmul (MLX's own qmm is wrong for some
                    # shapes on CUDA, see qmm_h200_notes.md)
                    w0, s0, b0 = sets[0]
                    wd = mx.dequantize(w0, s0.astype(mx.float32), b0.astype(mx.float32),
                                       group_size=gs, bits=bits)
                    r = x.astype(mx.float32) @ wd.T
                    rel = lambda o, r=r: (mx.linalg.norm(o.astype(mx.float32) - r)  # noqa: E731
                                          / mx.maximum(mx.linalg.norm(r), 1e-30)).item()
                    err = rel(ours(x, *sets[0]))
                    err_mlx = rel(theirs(x, *sets[0]))
                    del wd, r
                    t_ours = time_op(ours, x, sets, args.reps)
                    t_mlx = time_op(theirs, x, sets, args.reps)
                    rec = {
                        "family": fam, "N": N, "K": K, "M": M, "dtype": dname,
                        "weight_bytes": wb, "sets": count,
                        "ours_us": t_ours * 1e6, "mlx_us": t_mlx * 1e6,
                        "speedup": t_mlx / t_ours,
                        "bw_frac_ours": wb / t_ours / bw,
                        "bw_frac_mlx": wb / t_mlx / bw,
                        "floor_us": wb / bw * 1e6,
                        "rel_err_ours": err, "rel_err_mlx": err_mlx,
                    }
                    results.append(rec)
                    print(f"{fam} {N}x{K} {dname} M={M}: ours {t_ours*1e6:.1f} us, "
                          f"mlx {t_mlx*1e6:.1f} us, x{t_mlx/t_ours:.2f}, "
                          f"{rec['bw_frac_ours']*100:.0f}% of copy bw, err ours {err:.2e} mlx {err_mlx:.2e}", flush=True)
                del sets
                mx.clear_cache()

    # Summary table and goals
    rows = []
    for fam, shapes in families.items():
        for (N, K) in shapes:
            for dname in dtypes:
                rs = {r["M"]: r for r in results if r["family"] == fam and r["N"] == N
                      and r["K"] == K and r["dtype"] == dname}
                t1 = rs[1]["ours_us"]
                flat = max(rs[m]["ours_us"] for m in rs if m <= 16) / t1
                small = [rs[m]["speedup"] for m in rs if 2 <= m <= 7]
                geo = math.exp(sum(math.log(s) for s in small) / len(small)) if small else float("nan")
                worst = min(rs[m]["speedup"] for m in rs)
                bwf = min(rs[m]["bw_frac_ours"] for m in rs if m <= 8)
                rows.append([fam, f"{N}x{K}", dname, f"{t1:.1f}", f"{rs[1]['floor_us']:.1f}",
                             f"{flat:.2f}", f"{geo:.2f}", f"{worst:.2f}", f"{bwf*100:.0f}%"])
    print()
    print_table(["family", "NxK", "dtype", "M=1 us", "floor us", "max(M<=16)/M=1",
                 "geomean x MLX 2<=M<=7", "min x MLX", "min bw% M<=8"], rows)

    payload = {
        "machine": machine_info("gpu"),
        "method": (f"{OPS} ops per mx.eval over rotated weight sets (>= 4x the 60 MB L2 "
                   f"where possible, at most 256 sets); median of {args.reps} batches; "
                   "time per op = batch time / ops; host overhead included (~7 us/op)."),
        "copy_bandwidth_torch_Bps": bw_torch,
        "copy_bandwidth_mlx_Bps": bw_mlx,
        "group_size": gs, "bits": bits,
        "results": results,
    }
    try:
        import torch
        payload["machine"]["torch"] = torch.__version__
        payload["machine"]["gpu_torch"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001
        pass
    (out_dir / f"qmm_h200{args.tag}.json").write_text(json.dumps(payload, indent=2) + "\n")

    plot_families(results, families, dtypes, out_dir, f"qmm_h200{args.tag}",
                  "host-timed", payload["machine"].get("gpu"))

def plot_families(results, families, dtypes, out_dir, stem, method, gpu=None):
    """Time against M for each shape, ours and MLX's, one PNG per model family
    (`stem`_`family`.png), titled with the GPU that ran them (machine info's
    "gpu"); nothing without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # noqa: BLE001
        return
    for fam, shapes in families.items():
        fig, axes = plt.subplots(1, len(shapes), figsize=(4 * len(shapes), 3.6), squeeze=False)
        for ax, (N, K) in zip(axes[0], shapes):
            for dname, style in zip(dtypes, ["-", "--"]):
                rs = sorted((r for r in results if r["family"] == fam and r["N"] == N
                             and r["K"] == K and r["dtype"] == dname), key=lambda r: r["M"])
                ms = [r["M"] for r in rs]
                ax.plot(ms, [r["ours_us"] for r in rs], "o" + style, color="C0", label=f"ours {dname}")
                ax.plot(ms, [r["mlx_us"] for r in rs], "s" + style, color="C1", label=f"MLX {dname}")
            fl = [r["floor_us"] for r in results if r["family"] == fam and r["N"] == N
                  and r["K"] == K][0]
            ax.axhline(fl, color="k", lw=1, ls=":", label="bytes / copy bw")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{N}x{K}")
            ax.set_xlabel("M")
        axes[0][0].set_ylabel("us per call")
        axes[0][0].legend(fontsize=7)
        card = (gpu or "GPU").replace("NVIDIA ", "")
        fig.suptitle(f"quantized_matmul 4-bit gs64, {fam}, {card} ({method})")
        fig.tight_layout()
        fig.savefig(out_dir / f"{stem}_{fam}.png", dpi=110)
        plt.close(fig)


if __name__ == "__main__":
    main()
