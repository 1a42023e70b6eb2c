"""Kernel times of quantized_matmul on the GPU, ours and MLX's, read by Nsight
Compute (`ncu`), so that MLX's per-op host overhead hides nothing.

Two steps (run_h200.sh stage `ncu` does both):

    ncu --csv --page raw --metrics gpu__time_duration.sum --cache-control all \
        --clock-control none --profile-from-start off \
        python3 ncu_qmm_gpu.py run --cases /tmp/cases.json > /tmp/ncu.csv
    python3 ncu_qmm_gpu.py parse --cases /tmp/cases.json --csv /tmp/ncu.csv --out DIR

`run` prepares every case (inputs evaluated, each op run once to warm up) and
only then opens the profiling range (cuProfilerStart), in which it evaluates,
case by case, our op and then MLX's, each followed by a synchronize. ncu
flushes the caches before each kernel (--cache-control all), so the weights
come from HBM, and leaves the clocks alone. `parse` assigns the kernels in
launch order: a case is our kernel(s) (names in namespace mlx_kernels)
followed by MLX's kernel(s) (every other name; MLX may launch more than one
per op), and sums each side's durations. The copy bandwidth is measured in
`run`, outside the profiling range, with CUDA events around a torch copy.
`compare --json NEW BASE [BASE2]` sets one setting's times against another's
of the same lease (A/B of a tuning knob), grouped by NEW's plan.

Writes qmm_h200_ncu.json and qmm_h200_ncu_<family>.png to DIR (default
benchmarks/results) and prints the
goals of the issue: M-flatness up to 16, bandwidth at M <= 8 for weights of
30 MB or more, geomean speed-up over 2 <= M <= 7, slowest ratio up to M = 64.
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import io
import json
import math
import sys
import time
from pathlib import Path

SHAPES = {
    "llama3-8b": [(4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336), (128256, 4096)],
    "qwen3-0.6b": [(1024, 1024), (2048, 1024), (1024, 2048), (3072, 1024), (1024, 3072),
                   (151936, 1024)],
}
M_VALUES = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64]
GS, BITS = 64, 4


def requested_shapes(spec):
    """The families and shapes of a --shapes list ("NxK,..."; empty: all of
    SHAPES). Shapes outside SHAPES form the family "extra" (A/B runs on other
    sizes, e.g. the plan's thresholds)."""
    if not spec:
        return SHAPES
    wanted = [tuple(int(v) for v in sh.split("x")) for sh in spec.split(",")]
    known = {sh for shapes in SHAPES.values() for sh in shapes}
    fams = {fam: [sh for sh in shapes if sh in wanted] for fam, shapes in SHAPES.items()}
    fams["extra"] = [sh for sh in wanted if sh not in known]
    return {fam: shapes for fam, shapes in fams.items() if shapes}


def weight_bytes(N, K, itemsize=2):
    return N * K * BITS // 8 + 2 * N * (K // GS) * itemsize


# The plan fields that tell the launches apart (see qmm_plan.h).
PLAN_FIELDS = ("kernel", "split_k", "grid", "warps", "tiles_per_block", "ring", "m_tiles",
               "row_tiles", "mma_order", "push_partials")


def device_plan(M, N, K, dtype):
    """The whole launch plan of our op for this case on this GPU (its SMs and
    the driver's cluster capacities, the knobs of this process): the split
    rule depends on the device (session 13)."""
    from _common import cuda_cluster_capacity
    from mlx_kernels import _ext

    caps = cuda_cluster_capacity()
    sms = caps[0] if caps else 132  # clusters of one block: one an SM
    return _ext.plan_cuda_quantized_matmul(M, N, K, GS, BITS, True, dtype, sms, caps)


def planned(M, N, K, dtype):
    """The plan fields that tell the launches apart, as recorded with each result."""
    p = device_plan(M, N, K, dtype)
    return {k: p.get(k) for k in PLAN_FIELDS}  # (a field an older build lacks: None)


def run(args):
    import mlx.core as mx

    import mlx_kernels as mk
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_qmm_gpu import copy_bandwidth_torch

    mx.set_default_device(mx.gpu)
    t0 = time.monotonic()

    def progress(what):
        # stderr (qmm_ncu.err comes back): where a process that profiles
        # nothing spends its time (the first ncu process of a lease, session 19)
        print(f"[{time.monotonic() - t0:6.1f} s] {what}", file=sys.stderr, flush=True)

    progress("start")
    bw = copy_bandwidth_torch()
    progress(f"copy bandwidth {bw / 1e12:.2f} TB/s")
    dtypes = {"float16": mx.float16, "bfloat16": mx.bfloat16}
    dtypes = {k: v for k, v in dtypes.items() if k in args.dtypes.split(",")}
    m_values = [int(v) for v in args.mvalues.split(",")] if args.mvalues else M_VALUES
    cases, prepared = [], []
    for fam, shapes in requested_shapes(args.shapes).items():
        for (N, K) in shapes:
            for dname, dt in dtypes.items():
                w, s, b = mx.quantize(mx.random.normal((N, K)), group_size=GS, bits=BITS)
                s, b = s.astype(dt), b.astype(dt)
                mx.eval(w, s, b)
                progress(f"{N}x{K} {dname}: weights quantized")
                for M in m_values:
                    x = mx.random.normal((M, K)).astype(dt)
                    mx.eval(x)
                    kw = dict(transpose=True, group_size=GS, bits=BITS)
                    ours = lambda x=x, w=w, s=s, b=b, kw=kw: mk.quantized_matmul(x, w, s, b, **kw)  # noqa: E731
                    mlx = lambda x=x, w=w, s=s, b=b, kw=kw: mx.quantized_matmul(x, w, s, b, **kw)  # noqa: E731
                    mx.eval(ours())  # warm-up (JIT, graph caches) outside the range
                    progress(f"{N}x{K} {dname} M={M}: ours warmed up")
                    mx.eval(mlx())
                    progress(f"{N}x{K} {dname} M={M}: MLX's warmed up")
                    cases.append({"family": fam, "N": N, "K": K, "M": M, "dtype": dname,
                                  "weight_bytes": weight_bytes(N, K),
                                  "plan": planned(M, N, K, dname)})
                    prepared.append((ours, mlx))
    mx.synchronize()
    progress(f"{len(cases)} cases prepared; profiling")
    from _common import machine_info
    Path(args.cases).write_text(json.dumps(
        {"copy_bandwidth_Bps": bw, "machine": machine_info("gpu"), "cases": cases}))
    profile_pairs(prepared)


def profile_pairs(prepared):
    """Inside one profiling range (what ncu --profile-from-start off records),
    each case's op of ours and then MLX's, each evaluated and synchronized on
    its own, so that parse can assign the kernels in launch order."""
    import mlx.core as mx

    cuda = ctypes.CDLL("libcuda.so.1")
    cuda.cuProfilerStart()
    for ours, mlx in prepared:
        mx.eval(ours())
        mx.synchronize()
        mx.eval(mlx())
        mx.synchronize()
    cuda.cuProfilerStop()


TIME_METRIC = "gpu__time_duration.sum"
TIME_SCALE_US = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}


def read_kernel_rows(csv_text, metrics=()):
    """Each profiled kernel in launch order, as {"name", "us", <metric>: value}:
    the duration in us and the other metrics asked for (a float where the cell
    is a number, else the text; None where the column is missing)."""
    lines = csv_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('"ID"'))
    rows = list(csv.DictReader(io.StringIO("\n".join(lines[start:]))))
    unit = "ns"
    if rows and not rows[0]["ID"].isdigit():  # the units row
        unit = rows[0][TIME_METRIC]
    scale = TIME_SCALE_US[unit]

    def value(cell):
        if cell is None:
            return None
        try:
            return float(cell.replace(",", ""))
        except ValueError:
            return cell

    out = []
    for r in rows:
        if not r["ID"].isdigit():
            continue
        k = {"name": r["Kernel Name"], "us": float(r[TIME_METRIC].replace(",", "")) * scale}
        k.update({m: value(r.get(m)) for m in metrics})
        out.append(k)
    return out


def read_kernels(csv_text):
    """(name, duration in us) of each profiled kernel, in launch order."""
    return [(k["name"], k["us"]) for k in read_kernel_rows(csv_text)]


def parse(args):
    meta = json.loads(Path(args.cases).read_text())
    cases, bw = meta["cases"], meta["copy_bandwidth_Bps"]
    kernels = read_kernels(Path(args.csv).read_text())
    cur, phase = -1, None
    for c in cases:
        c.update(ours_us=0.0, mlx_us=0.0, ours_kernels=[], mlx_kernels=[])
    for name, us in kernels:
        ours = "mlx_kernels" in name
        if ours and phase != "ours":
            cur, phase = cur + 1, "ours"
        elif not ours:
            phase = "mlx"
        if cur < 0 or cur >= len(cases):
            continue
        c = cases[cur]
        c[f"{phase}_us"] += us
        c[f"{phase}_kernels"].append(name.split("(")[0][-60:])
    if cur + 1 != len(cases):
        print(f"warning: {cur + 1} kernel groups for {len(cases)} cases", file=sys.stderr)
    for c in cases:
        c["speedup"] = c["mlx_us"] / c["ours_us"] if c["ours_us"] > 0 else float("nan")
        c["bw_frac_ours"] = c["weight_bytes"] / (c["ours_us"] * 1e-6) / bw if c["ours_us"] else 0
        c["bw_frac_mlx"] = c["weight_bytes"] / (c["mlx_us"] * 1e-6) / bw if c["mlx_us"] else 0
        c["floor_us"] = c["weight_bytes"] / bw * 1e6

    rows = []
    keys = sorted({(c["family"], c["N"], c["K"], c["dtype"]) for c in cases},
                  key=lambda k: (k[0], -k[1] * k[2], k[3]))
    for fam, N, K, dt in keys:
        rs = {c["M"]: c for c in cases if (c["family"], c["N"], c["K"], c["dtype"]) == (fam, N, K, dt)}
        # A grid may leave out M = 1 or every M <= 8 or 16 (an A/B of the
        # larger M): those columns are then nan (times) or "-" (bandwidth).
        any_case = next(iter(rs.values()))
        t1 = rs[1]["ours_us"] if 1 in rs else float("nan")
        up_to_16 = [rs[m]["ours_us"] for m in rs if m <= 16]
        flat = max(up_to_16) / t1 if up_to_16 and 1 in rs else float("nan")
        small = [rs[m]["speedup"] for m in rs if 2 <= m <= 7]
        geo = math.exp(sum(map(math.log, small)) / len(small)) if small else float("nan")
        worst_m = min(rs, key=lambda m: rs[m]["speedup"])
        up_to_8 = [rs[m]["bw_frac_ours"] for m in rs if m <= 8]
        big = any_case["weight_bytes"] >= 30e6
        bw_text = (f"{min(up_to_8) * 100:.0f}%" + ("" if big else " (small)")) if up_to_8 else "-"
        rows.append([f"{N}x{K}", dt, f"{t1:.1f}", f"{any_case['floor_us']:.1f}", f"{flat:.2f}",
                     f"{geo:.2f}", f"{rs[worst_m]['speedup']:.2f} (M={worst_m})", bw_text])
    headers = ["NxK", "dtype", "M=1 us", "floor us", "max(M<=16)/M=1 [<=1.25]",
               "geomean x MLX 2<=M<=7 [>=3]", "min x MLX M<=64 [>=1]", "min bw M<=8 [>=70%, >=30MB]"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    if args.per_case:
        for c in cases:
            print(f"{c['N']}x{c['K']} {c['dtype']} M={c['M']}: ours {c['ours_us']:.2f} us, "
                  f"mlx {c['mlx_us']:.2f} us, x{c['speedup']:.2f}, "
                  f"{c['bw_frac_ours'] * 100:.0f}% bw")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "method": ("Nsight Compute kernel durations (gpu__time_duration.sum), caches flushed "
                   "before each kernel (--cache-control all), clocks not locked "
                   "(--clock-control none); one launch per case and implementation; all "
                   "kernels of an op summed. Copy bandwidth: torch device-to-device copy "
                   "of 2 GiB, CUDA events, bytes read + written, median of 20."),
        "copy_bandwidth_Bps": bw, "group_size": GS, "bits": BITS,
        "machine": meta.get("machine"),
        "results": cases,
    }
    (out / "qmm_h200_ncu.json").write_text(json.dumps(payload, indent=2) + "\n")

    plot_results(payload, out, "qmm_h200_ncu")


def plot_results(payload, out, stem):
    """The plots of one results JSON's cases (`stem`_`family`.png in out)."""
    from bench_qmm_gpu import plot_families

    cases = payload["results"]
    families = {}
    for c in cases:  # in case order: SHAPES' families first, then "extra"
        shapes = families.setdefault(c["family"], [])
        if (c["N"], c["K"]) not in shapes:
            shapes.append((c["N"], c["K"]))
    dtypes = [d for d in ("float16", "bfloat16") if any(c["dtype"] == d for c in cases)]
    plot_families(cases, families, dtypes, Path(out), stem, "ncu kernel times",
                  (payload.get("machine") or {}).get("gpu"))


def replot(args):
    """Redraw the plots of results JSONs already written (--json, one or more):
    `name`_`family`.png next to each."""
    for name in args.json:
        path = Path(name)
        plot_results(json.loads(path.read_text()), path.parent, path.stem)


def geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def compare(args):
    """A/B of our kernel times: --json NEW BASE [BASE2 ...], results JSONs of
    one lease. Per case, NEW's time over the geometric mean of the bases'
    (two bases of one setting show the run-to-run noise); then the geomean,
    min and max per group of NEW's plan (kernel, m_tiles). Returns the groups."""
    new, *bases = [{(r["N"], r["K"], r["M"], r["dtype"]): r
                    for r in json.loads(Path(n).read_text())["results"]} for n in args.json]
    if not bases:
        raise SystemExit("compare: --json NEW BASE [BASE2 ...]")
    groups = {}
    for key in sorted(new):
        if not all(key in b for b in bases):
            continue
        ratio = new[key]["ours_us"] / geomean([b[key]["ours_us"] for b in bases])
        plan = new[key].get("plan") or {}
        group = (plan.get("kernel", "?"), plan.get("m_tiles", 0))
        groups.setdefault(group, []).append(ratio)
        if args.per_case:
            base_us = " ".join(f"{b[key]['ours_us']:7.2f}" for b in bases)
            print(f"{key[0]}x{key[1]} {key[3]:8s} M={key[2]:<3d} {group[0]:18s} "
                  f"MT {group[1]}: new {new[key]['ours_us']:7.2f} us, base {base_us} -> "
                  f"x{ratio:.3f}")
    if len(bases) > 1:
        noise = [bases[1][k]["ours_us"] / bases[0][k]["ours_us"] for k in new
                 if all(k in b for b in bases[:2])]
        print(f"base 2 / base 1: geomean {geomean(noise):.3f}, "
              f"{min(noise):.3f}-{max(noise):.3f}")
    for (kernel, m_tiles), ratios in sorted(groups.items()):
        print(f"{kernel:18s} m_tiles {m_tiles}: {len(ratios):3d} cases, new/base geomean "
              f"{geomean(ratios):.3f}, {min(ratios):.3f}-{max(ratios):.3f}")
    return groups


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", choices=["run", "parse", "plot", "compare"])
    ap.add_argument("--cases", default="/tmp/qmm_ncu_cases.json")
    ap.add_argument("--csv", default="/tmp/qmm_ncu.csv")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--dtypes", default="float16,bfloat16")
    ap.add_argument("--mvalues", default="")
    ap.add_argument("--shapes", default="")
    ap.add_argument("--per-case", action="store_true", help="parse: also print every case")
    ap.add_argument("--json", nargs="+", default=[],
                    help="plot: results JSONs to redraw; compare: NEW BASE [BASE2 ...]")
    args = ap.parse_args()
    {"run": run, "parse": parse, "plot": replot, "compare": compare}[args.mode](args)


if __name__ == "__main__":
    main()
